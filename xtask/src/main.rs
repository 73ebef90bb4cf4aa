//! Maintainer commands for a release, run as `cargo xtask COMMAND` (an alias in
//! `.cargo/config.toml`):
//!
//!   cargo xtask sbom --out FILE       CycloneDX JSON SBOM of the static binary's dependencies
//!   cargo xtask image --out DIR [--binary PATH] [--name REF]
//!                                     OCI image layout of the image the Dockerfile describes,
//!                                     made from the static binary, reproducibly; SBOM attached
//!   cargo xtask release --registry HOST:PORT --key FILE [--binary PATH] [--out DIR]
//!                                     push the image and the chart by digest, sign both with
//!                                     cosign, attest the image's SBOM and provenance
//!   cargo xtask crds [--check]        the CustomResourceDefinitions of cluster mode as YAML, in
//!                                     the chart's crds/ and deploy/controller/; --check only
//!                                     compares
//!
//! `sbom` and `image` are reproducible: timestamps come from `SOURCE_DATE_EPOCH`, else the commit time of HEAD.

mod crds;
mod image;
mod release;
mod sbom;
mod sha256;
mod tar;
mod yaml;

use std::path::{Path, PathBuf};
use std::process::Command;

pub type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

pub const BINARY_PACKAGE: &str = "fiskil-token-refresher";
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// Where tests/deploy/static-binary.sh leaves the static binary.
pub const STATIC_BINARY: &str =
    "target/static-musl/x86_64-unknown-linux-musl/release/fiskil-token-refresher";

const USAGE: &str = "usage:
  cargo xtask sbom --out FILE
  cargo xtask image --out DIR [--binary PATH] [--name REF]
  cargo xtask release --registry HOST:PORT --key FILE [--binary PATH] [--out DIR]
  cargo xtask crds [--check]

sbom   writes a CycloneDX 1.5 JSON SBOM of the crates compiled into the binary ({TARGET})
image  writes an OCI image layout (DIR/oci-layout, DIR/index.json, DIR/blobs) of the image the
       Dockerfile's runtime stage describes, from the static binary (default {STATIC_BINARY},
       built by tests/deploy/static-binary.sh), with the SBOM attached as an OCI referrer;
       prints the image manifest's digest. --name adds a containerd image name to index.json.
release  makes that image, pushes it to HOST:PORT/fiskil-token-refresher:VERSION (and the SBOM
       referrer) and the chart to oci://HOST:PORT/charts (helm push --plain-http), signs both
       digests with the cosign key FILE (password in COSIGN_PASSWORD, no transparency log),
       attests the image with the SBOM (cyclonedx) and a SLSA v1 provenance (slsaprovenance1);
       tools from $CRANE, $COSIGN, $HELM (else PATH); leaves everything it made in DIR
       (default {RELEASE_OUT}) with release.json; prints the image and chart references.
crds   writes the CustomResourceDefinitions of cluster mode (src/controller/resources.rs) as
       YAML to {CRDS}; with --check writes nothing and fails when a committed file differs.";

/// Run a program in the workspace root and return its standard output.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// HEAD's commit, when the workspace is a git checkout.
pub fn git_head() -> Option<String> {
    run("git", &["rev-parse", "HEAD"])
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `SOURCE_DATE_EPOCH`, else HEAD's commit time, else 0.
pub fn source_date_epoch() -> Result<u64> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return Ok(value
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={value:?} is not a number"))?);
    }
    Ok(run("git", &["log", "-1", "--format=%ct", "HEAD"])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0))
}

/// Seconds since the epoch as RFC 3339 UTC, e.g. 2026-12-05T12:00:00Z.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = std::env::set_current_dir(workspace_root())
        .map_err(Into::into)
        .and_then(|()| cli(&args))
    {
        eprintln!("cargo xtask: {e}");
        std::process::exit(1);
    }
}

fn cli(args: &[String]) -> Result<()> {
    let usage = || {
        USAGE
            .replace("{TARGET}", TARGET)
            .replace("{STATIC_BINARY}", STATIC_BINARY)
            .replace("{RELEASE_OUT}", &release::default_out().to_string_lossy())
            .replace("{CRDS}", &crds::OUTPUTS.join(" and "))
    };
    let Some((command, rest)) = args.split_first() else {
        return Err(usage().into());
    };
    if command == "crds" {
        return match rest {
            [] => crds::run(false),
            [flag] if flag == "--check" => crds::run(true),
            _ => Err(format!("crds takes only --check\n{}", usage()).into()),
        };
    }
    let mut options = std::collections::BTreeMap::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        options.insert(flag.as_str(), value.as_str());
    }
    let allowed: &[&str] = match command.as_str() {
        "sbom" => &["--out"],
        "image" => &["--out", "--binary", "--name"],
        "release" => &["--registry", "--key", "--binary", "--out"],
        "-h" | "--help" | "help" => {
            println!("{}", usage());
            return Ok(());
        }
        other => return Err(format!("unknown command {other:?}\n{}", usage()).into()),
    };
    if let Some(flag) = options.keys().find(|f| !allowed.contains(f)) {
        return Err(format!("{command} does not take {flag}\n{}", usage()).into());
    }
    let need = |flag: &str| {
        options
            .get(flag)
            .copied()
            .ok_or_else(|| format!("{command} needs {flag}\n{}", usage()))
    };
    let binary = options.get("--binary").copied().unwrap_or(STATIC_BINARY);
    if command == "release" {
        let out = options
            .get("--out")
            .map_or_else(release::default_out, PathBuf::from);
        let released = release::release(&release::Options {
            registry: need("--registry")?,
            key: Path::new(need("--key")?),
            binary: Path::new(binary),
            out: &out,
        })?;
        println!("image {}", released.image);
        println!("sbom-referrer {}", released.sbom_referrer);
        println!("chart {}", released.chart);
        return Ok(());
    }
    let out = need("--out")?;
    match command.as_str() {
        "sbom" => {
            let doc = sbom::document()?;
            std::fs::write(out, serde_json::to_string_pretty(&doc)? + "\n")?;
            eprintln!(
                "wrote {out}: {} components",
                doc["components"].as_array().map_or(0, Vec::len)
            );
        }
        _ => {
            let digest = image::build(
                Path::new(out),
                Path::new(binary),
                options.get("--name").copied(),
            )?;
            println!("{digest}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_470_245), "2026-12-05T11:30:45Z");
    }
}
