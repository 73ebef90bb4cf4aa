//! `cargo xtask release`: push the release image and the Helm chart to an OCI registry, by
//! digest, and sign both with a cosign key; attest the image with its CycloneDX SBOM and a SLSA
//! v1 provenance predicate.
//!
//! 1. `image::build` makes the OCI layout from the static binary (as `cargo xtask image`).
//! 2. `crane push` sends the image manifest (alone, so that the registry stores exactly the
//!    manifest whose digest `image::build` printed) to `REGISTRY/fiskil-token-refresher:VERSION`,
//!    then the SBOM's OCI 1.1 referrer manifest by its own digest.
//! 3. `helm package` + `helm push` send the chart to `oci://REGISTRY/charts`.
//! 4. `cosign sign` signs the image digest and the chart digest; `cosign attest` attaches the
//!    SBOM (`--type cyclonedx`) and the provenance (`--type slsaprovenance1`) to the image.
//!
//! Everything is addressed by digest; tags only name what was pushed. The tools come from the
//! environment (`CRANE`, `COSIGN`, `HELM`, else `crane`, `cosign`, `helm` on `PATH`); the key's
//! password from `COSIGN_PASSWORD`, as cosign reads it. Key-pair signing with no transparency
//! log (`--tlog-upload=false`, which cosign v3 still honours but calls deprecated in favour of a
//! signing config without transparency log services): the keyless (OIDC identity + Rekor)
//! variant needs the public Sigstore services, see the README's "Releases".

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::{rfc3339, source_date_epoch, Result, BINARY_PACKAGE, TARGET};

pub const CHART_DIR: &str = "charts/fiskil-token-refresher";
/// What `.ci/run` or a maintainer's machine says it is, unless `FISKIL_BUILDER_ID` says more.
pub const DEFAULT_BUILDER_ID: &str = "urn:fiskil-token-refresher:builder:local";
pub const BUILD_TYPE: &str = "urn:fiskil-token-refresher:build-type:cargo-xtask-image:v1";

pub struct Options<'a> {
    pub registry: &'a str,
    pub key: &'a Path,
    pub binary: &'a Path,
    pub out: &'a Path,
}

/// The references that were pushed and signed, each `HOST:PORT/REPO@sha256:...`.
pub struct Released {
    pub image: String,
    pub sbom_referrer: String,
    pub chart: String,
}

fn tool(name: &str) -> String {
    std::env::var(name.to_ascii_uppercase()).unwrap_or_else(|_| name.to_owned())
}

/// Run a tool; its standard error goes to ours; returns its standard output.
fn run_tool(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Result<String> {
    eprintln!("+ {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {} failed ({})", args.join(" "), out.status).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

/// A copy of `layout` whose index.json lists only `entry` (blobs hard-linked, else copied), so
/// that `crane push` sends that one manifest.
fn single_manifest_layout(layout: &Path, entry: &Value, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for blob in std::fs::read_dir(layout.join("blobs/sha256"))? {
        let blob = blob?;
        let to = blobs.join(blob.file_name());
        if std::fs::hard_link(blob.path(), &to).is_err() {
            std::fs::copy(blob.path(), &to)?;
        }
    }
    std::fs::copy(layout.join("oci-layout"), dir.join("oci-layout"))?;
    let mut entry = entry.clone();
    if let Some(map) = entry.as_object_mut() {
        map.remove("annotations");
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// `HOST:PORT/REPO@sha256:...` from crane's output, checked against the digest we expect.
fn pushed(output: &str, expected: &str) -> Result<String> {
    let reference = output
        .lines()
        .map(str::trim)
        .find(|l| l.contains("@sha256:"))
        .ok_or_else(|| format!("crane push printed no digest: {output:?}"))?;
    if !reference.ends_with(&format!("@{expected}")) {
        return Err(format!("the registry stored {reference}, not {expected}").into());
    }
    Ok(reference.to_owned())
}

/// The digest in `helm push`'s "Digest: sha256:..." line.
fn helm_digest(output: &str) -> Option<&str> {
    output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Digest:")
            .map(str::trim)
            .filter(|d| d.starts_with("sha256:") && d.len() == 71)
    })
}

/// A SLSA v1 provenance predicate for the image: the commit, the build's inputs (Dockerfile,
/// Cargo.lock, the static binary) and every crate compiled into the binary, by checksum.
pub fn provenance(
    root: &Path,
    commit: &str,
    epoch: u64,
    binary_sha256: &str,
    sbom: &Value,
    started: u64,
    finished: u64,
) -> Result<Value> {
    let file_digest = |path: &str| -> Result<Value> {
        let bytes = std::fs::read(root.join(path)).map_err(|e| format!("{path}: {e}"))?;
        Ok(json!({ "name": path, "digest": { "sha256": crate::sha256::hex(&bytes) } }))
    };
    let mut materials = vec![
        json!({ "name": "source", "digest": { "gitCommit": commit } }),
        file_digest("Dockerfile")?,
        file_digest("Cargo.lock")?,
        json!({
            "name": format!("{BINARY_PACKAGE} ({TARGET}, release)"),
            "digest": { "sha256": binary_sha256 },
        }),
    ];
    for c in sbom["components"].as_array().into_iter().flatten() {
        let sha = c["hashes"]
            .as_array()
            .and_then(|h| h.iter().find(|h| h["alg"] == "SHA-256"))
            .and_then(|h| h["content"].as_str());
        if let (Some(purl), Some(sha)) = (c["purl"].as_str(), sha) {
            materials.push(json!({ "uri": purl, "digest": { "sha256": sha } }));
        }
    }
    let builder =
        std::env::var("FISKIL_BUILDER_ID").unwrap_or_else(|_| DEFAULT_BUILDER_ID.to_owned());
    Ok(json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "source": { "digest": { "gitCommit": commit } },
                "dockerfile": "Dockerfile",
                "target": TARGET,
            },
            "internalParameters": { "SOURCE_DATE_EPOCH": epoch },
            "resolvedDependencies": materials,
        },
        "runDetails": {
            "builder": { "id": builder },
            "metadata": {
                "invocationId": format!("{commit}/{started}"),
                "startedOn": rfc3339(started),
                "finishedOn": rfc3339(finished),
            },
        },
    }))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// cosign's flags for a key pair and no transparency log, no network besides the registry.
fn cosign_key_flags(key: &str) -> Vec<String> {
    [
        "--key",
        key,
        "--tlog-upload=false",
        "--use-signing-config=false",
        "--yes",
    ]
    .map(str::to_owned)
    .to_vec()
}

pub fn release(opts: &Options) -> Result<Released> {
    let started = now();
    let (crane, cosign, helm) = (tool("crane"), tool("cosign"), tool("helm"));
    let out = opts.out;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    let key = opts
        .key
        .to_str()
        .ok_or("the key's path is not UTF-8")?
        .to_owned();
    if !opts.key.is_file() {
        return Err(format!("{key}: no such key file (cosign generate-key-pair)").into());
    }

    // 1. The image layout.
    let layout = out.join("image");
    let digest = crate::image::build(&layout, opts.binary, None)?;
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or("index.json: no manifests")?;
    let image_entry = manifests
        .iter()
        .find(|m| m["digest"] == digest.as_str())
        .ok_or("index.json does not list the image")?;
    let sbom_entry = manifests
        .iter()
        .find(|m| m["artifactType"] == crate::image::SBOM_MEDIA_TYPE)
        .ok_or("index.json does not list the SBOM referrer")?;
    let sbom_manifest_digest = sbom_entry["digest"].as_str().unwrap_or_default();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let sbom_manifest = read_json(&blob(sbom_manifest_digest))?;
    let sbom_blob = sbom_manifest["layers"][0]["digest"]
        .as_str()
        .ok_or("the SBOM manifest has no layer")?;
    let sbom_path = out.join("sbom.cdx.json");
    std::fs::copy(blob(sbom_blob), &sbom_path)?;
    let sbom = read_json(&sbom_path)?;
    let image_manifest = read_json(&blob(&digest))?;
    let config = read_json(&blob(
        image_manifest["config"]["digest"]
            .as_str()
            .ok_or("no config")?,
    ))?;
    let labels = &config["config"]["Labels"];
    let version = labels["org.opencontainers.image.version"]
        .as_str()
        .ok_or("no version label")?;
    let commit = labels["org.opencontainers.image.revision"]
        .as_str()
        .ok_or("no revision label")?;

    // 2. Push the image, then the SBOM referrer, each as a one-manifest layout.
    let repository = format!("{}/{BINARY_PACKAGE}", opts.registry);
    let image_dir = out.join("push-image");
    single_manifest_layout(&layout, image_entry, &image_dir)?;
    let tag = format!("{repository}:{version}");
    let image_ref = pushed(
        &run_tool(&crane, &["push", path_str(&image_dir)?, &tag], &[])?,
        &digest,
    )?;
    let sbom_dir = out.join("push-sbom");
    single_manifest_layout(&layout, sbom_entry, &sbom_dir)?;
    let sbom_ref = format!("{repository}@{sbom_manifest_digest}");
    let sbom_ref = pushed(
        &run_tool(&crane, &["push", path_str(&sbom_dir)?, &sbom_ref], &[])?,
        sbom_manifest_digest,
    )?;

    // 3. The chart, as an OCI artifact.
    let helm_home = out.join("helm");
    let helm_env = [
        ("HELM_CACHE_HOME", helm_home.join("cache")),
        ("HELM_CONFIG_HOME", helm_home.join("config")),
        ("HELM_DATA_HOME", helm_home.join("data")),
        ("HELM_REGISTRY_CONFIG", helm_home.join("registry.json")),
    ];
    let helm_env: Vec<(&str, &Path)> = helm_env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let packaged = run_tool(
        &helm,
        &["package", CHART_DIR, "--destination", path_str(out)?],
        &helm_env,
    )?;
    let tgz = packaged
        .rsplit(": ")
        .next()
        .map(str::trim)
        .filter(|p| p.ends_with(".tgz"))
        .ok_or_else(|| format!("helm package printed no archive: {packaged:?}"))?
        .to_owned();
    let chart_repo = format!("oci://{}/charts", opts.registry);
    let mut cmd = Command::new(&helm);
    cmd.args(["push", &tgz, &chart_repo, "--plain-http"]);
    for (k, v) in &helm_env {
        cmd.env(k, v);
    }
    eprintln!("+ {helm} push {tgz} {chart_repo} --plain-http");
    let push = cmd.output().map_err(|e| format!("{helm}: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&push.stdout),
        String::from_utf8_lossy(&push.stderr)
    );
    eprint!("{said}");
    if !push.status.success() {
        return Err(format!("helm push failed ({})", push.status).into());
    }
    let chart_digest =
        helm_digest(&said).ok_or_else(|| format!("helm push printed no digest: {said:?}"))?;
    let chart_name = Path::new(&tgz)
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tgz"))
        .and_then(|n| n.rsplit_once('-'))
        .map(|(name, _)| name.to_owned())
        .ok_or("cannot name the chart from its archive")?;
    let chart_ref = format!("{}/charts/{chart_name}@{chart_digest}", opts.registry);

    // 4. Sign and attest, by digest.
    let mut key_flags = cosign_key_flags(&key);
    key_flags.push("--allow-http-registry".into());
    let with = |verb: &str, extra: &[&str], reference: &str| -> Result<()> {
        let mut args = vec![verb];
        args.extend(key_flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        args.push(reference);
        run_tool(&cosign, &args, &[]).map(drop)
    };
    with("sign", &[], &image_ref)?;
    with("sign", &[], &chart_ref)?;
    with(
        "attest",
        &["--type", "cyclonedx", "--predicate", path_str(&sbom_path)?],
        &image_ref,
    )?;
    let binary = std::fs::read(opts.binary)?;
    let provenance_path = out.join("provenance.json");
    let predicate = provenance(
        Path::new("."),
        commit,
        source_date_epoch()?,
        &crate::sha256::hex(&binary),
        &sbom,
        started,
        now(),
    )?;
    std::fs::write(
        &provenance_path,
        serde_json::to_string_pretty(&predicate)? + "\n",
    )?;
    with(
        "attest",
        &[
            "--type",
            "slsaprovenance1",
            "--predicate",
            path_str(&provenance_path)?,
        ],
        &image_ref,
    )?;

    let released = Released {
        image: image_ref,
        sbom_referrer: sbom_ref,
        chart: chart_ref,
    };
    std::fs::write(
        out.join("release.json"),
        serde_json::to_string_pretty(&json!({
            "image": released.image,
            "sbomReferrer": released.sbom_referrer,
            "chart": released.chart,
            "chartArchive": tgz,
            "sbom": sbom_path,
            "provenance": provenance_path,
        }))? + "\n",
    )?;
    Ok(released)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()).into())
}

/// Where `cargo xtask release` leaves what it pushed, unless `--out` says otherwise.
pub fn default_out() -> PathBuf {
    PathBuf::from("target/release-artifacts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crane_output_must_name_the_expected_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let out = format!("2026/12/07 pushed blob\n127.0.0.1:5000/x@{d}\n");
        assert_eq!(pushed(&out, &d).unwrap(), format!("127.0.0.1:5000/x@{d}"));
        let other = format!("sha256:{}", "b".repeat(64));
        assert!(pushed(&out, &other).is_err());
        assert!(pushed("nothing", &d).is_err());
    }

    #[test]
    fn helm_push_digest_line() {
        let d = format!("sha256:{}", "c".repeat(64));
        let out = format!("Pushed: 127.0.0.1:5000/charts/c:0.1.0\nDigest: {d}\n");
        assert_eq!(helm_digest(&out), Some(d.as_str()));
        assert_eq!(helm_digest("Digest: sha256:short"), None);
    }

    #[test]
    fn provenance_lists_the_commit_and_every_crate() {
        let sbom = json!({ "components": [
            { "purl": "pkg:cargo/a@1.0.0", "hashes": [{ "alg": "SHA-256", "content": "11" }] },
            { "purl": "pkg:cargo/b@2.0.0" },
        ]});
        let root = crate::workspace_root();
        let p = provenance(&root, "abc", 5, "ff", &sbom, 10, 20).unwrap();
        let deps = p["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap();
        assert_eq!(deps[0]["digest"]["gitCommit"], "abc");
        assert!(deps.iter().any(|d| d["uri"] == "pkg:cargo/a@1.0.0"));
        assert!(!deps.iter().any(|d| d["uri"] == "pkg:cargo/b@2.0.0"));
        assert_eq!(
            p["runDetails"]["metadata"]["finishedOn"],
            "1970-01-01T00:00:20Z"
        );
    }
}
