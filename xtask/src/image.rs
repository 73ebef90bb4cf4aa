//! `cargo xtask image`: the image the Dockerfile's runtime stage describes, as an OCI image
//! layout, without a container engine.
//!
//! One uncompressed layer: the static binary where the Dockerfile copies it (root-owned, 0755,
//! as `COPY` leaves it), `/etc/passwd` and `/etc/group` with the `nonroot` user 65532,
//! `/home/nonroot` owned by 65532 and `/tmp` (1777), as in distroless/static; no shell. The
//! binary embeds the Mozilla roots, so no CA bundle is added. The config carries the Dockerfile's
//! USER, ENTRYPOINT, EXPOSE and LABELs plus `org.opencontainers.image.{revision,created,version}`.
//!
//! Reproducible: entries sorted, fixed owners and modes, every time from `SOURCE_DATE_EPOCH`
//! (else the commit time), no compression, JSON with sorted keys. The SBOM is attached as an OCI
//! 1.1 referrer (an artifact manifest whose `subject` is the image) in the same layout.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use crate::tar::{Entry, Kind};
use crate::{git_head, rfc3339, source_date_epoch, Result};

pub const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
pub const GROUP: &str = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n";
pub const SBOM_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// What the Dockerfile's last stage says about the image.
#[derive(Debug, PartialEq)]
pub struct RuntimeStage {
    pub user: String,
    pub entrypoint: Vec<String>,
    pub expose: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub copy_to: String,
}

/// `key=value` pairs of a LABEL line; values may be double-quoted with backslash escapes.
fn label_pairs(mut rest: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(pairs);
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("LABEL without '=': {rest}"))?;
        let key = rest[..eq].trim().to_owned();
        rest = &rest[eq + 1..];
        let mut value = String::new();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            value.push(next);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = &quoted[end.ok_or("LABEL with an unterminated quote")?..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        pairs.push((key, value));
    }
}

/// The runtime (last) stage of a Dockerfile.
pub fn runtime_stage(dockerfile: &str) -> Result<RuntimeStage> {
    let text = dockerfile.replace("\\\n", " ");
    let start = text.rfind("\nFROM ").ok_or("no FROM in the Dockerfile")?;
    let (mut user, mut entrypoint, mut copy_to) = (None, None, None);
    let (mut expose, mut labels) = (Vec::new(), BTreeMap::new());
    for line in text[start..].lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((instruction, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim();
        match instruction.to_ascii_uppercase().as_str() {
            "USER" => user = Some(rest.to_owned()),
            "ENTRYPOINT" => entrypoint = Some(serde_json::from_str::<Vec<String>>(rest)?),
            "EXPOSE" => expose.extend(rest.split_whitespace().map(|p| {
                if p.contains('/') {
                    p.to_owned()
                } else {
                    format!("{p}/tcp")
                }
            })),
            "LABEL" => labels.extend(label_pairs(rest)?),
            "COPY" => copy_to = rest.split_whitespace().last().map(str::to_owned),
            _ => {}
        }
    }
    Ok(RuntimeStage {
        user: user.ok_or("no USER in the Dockerfile's last stage")?,
        entrypoint: entrypoint.ok_or("no ENTRYPOINT in the Dockerfile's last stage")?,
        expose,
        labels,
        copy_to: copy_to.ok_or("no COPY in the Dockerfile's last stage")?,
    })
}

/// Everything an image is made of; the same inputs give the same bytes.
pub struct Inputs<'a> {
    pub stage: &'a RuntimeStage,
    pub binary: Vec<u8>,
    pub epoch: u64,
    pub commit: &'a str,
    pub version: &'a str,
    pub sbom: Vec<u8>,
    pub name: Option<&'a str>,
}

/// The layout's files: path (relative to the layout directory) -> bytes; and the image
/// manifest's digest.
pub fn layout(inputs: &Inputs) -> Result<(BTreeMap<String, Vec<u8>>, String)> {
    let stage = inputs.stage;
    let created = rfc3339(inputs.epoch);
    let binary_path = stage.copy_to.trim_start_matches('/').to_owned();
    let dir = |path: &str, mode, owner| Entry {
        path: path.into(),
        mode,
        uid: owner,
        gid: owner,
        kind: Kind::Dir,
    };
    let file = |path: &str, mode, data: Vec<u8>| Entry {
        path: path.into(),
        mode,
        uid: 0,
        gid: 0,
        kind: Kind::File(data),
    };
    let mut entries = vec![
        dir("etc", 0o755, 0),
        file("etc/group", 0o644, GROUP.into()),
        file("etc/passwd", 0o644, PASSWD.into()),
        dir("home", 0o755, 0),
        dir("home/nonroot", 0o700, 65532),
        dir("tmp", 0o1777, 0),
        file(&binary_path, 0o755, inputs.binary.clone()),
    ];
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let layer = crate::tar::archive(&entries, inputs.epoch);

    let mut blobs = BTreeMap::new();
    let mut add = |media_type: &str, data: Vec<u8>| {
        let digest = format!("sha256:{}", crate::sha256::hex(&data));
        let desc = json!({ "mediaType": media_type, "digest": digest, "size": data.len() });
        blobs.insert(format!("blobs/sha256/{}", &digest[7..]), data);
        desc
    };
    let layer_digest = format!("sha256:{}", crate::sha256::hex(&layer));
    let layer_desc = add("application/vnd.oci.image.layer.v1.tar", layer);

    let mut labels = stage.labels.clone();
    labels.insert("org.opencontainers.image.created".into(), created.clone());
    labels.insert(
        "org.opencontainers.image.revision".into(),
        inputs.commit.into(),
    );
    labels.insert(
        "org.opencontainers.image.version".into(),
        inputs.version.into(),
    );
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": stage.user,
            "Entrypoint": stage.entrypoint,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "ExposedPorts": stage.expose.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>(),
            "Labels": labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": created, "created_by": "cargo xtask image" }],
    });
    let config_desc = add(
        "application/vnd.oci.image.config.v1+json",
        serde_json::to_vec(&config)?,
    );
    let annotations = json!({
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.revision": inputs.commit,
        "org.opencontainers.image.version": inputs.version,
    });
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
        "annotations": annotations,
    });
    let mut manifest_desc = add(
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&manifest)?,
    );
    let digest = manifest_desc["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // The SBOM as a referrer of the image (OCI 1.1 artifact manifest with a subject).
    let empty_desc = add("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    let mut sbom_desc = add(SBOM_MEDIA_TYPE, inputs.sbom.clone());
    sbom_desc["annotations"] = json!({ "org.opencontainers.image.title": "sbom.cdx.json" });
    let sbom_manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": SBOM_MEDIA_TYPE,
        "config": empty_desc,
        "layers": [sbom_desc],
        "subject": manifest_desc.clone(),
        "annotations": { "org.opencontainers.image.created": created },
    });
    let mut sbom_manifest_desc = add(
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&sbom_manifest)?,
    );
    sbom_manifest_desc["artifactType"] = json!(SBOM_MEDIA_TYPE);

    manifest_desc["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let mut ref_annotations = json!({ "org.opencontainers.image.ref.name": inputs.version });
    if let Some(name) = inputs.name {
        ref_annotations["io.containerd.image.name"] = json!(name);
    }
    manifest_desc["annotations"] = ref_annotations;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc, sbom_manifest_desc],
    });
    let mut files = blobs;
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files.insert("index.json".into(), serde_json::to_vec(&index)?);
    Ok((files, digest))
}

/// The `version` part of `fiskil-token-refresher VERSION (commit C, P build)`.
fn binary_build(binary: &Path) -> Result<(String, String, String)> {
    let out = crate::run(&binary.to_string_lossy(), &["--version"])?;
    let line = out.trim();
    let parse = || -> Option<(String, String, String)> {
        let rest = line.strip_prefix(crate::BINARY_PACKAGE)?.trim_start();
        let (version, rest) = rest.split_once(" (commit ")?;
        let (commit, rest) = rest.split_once(", ")?;
        let profile = rest.strip_suffix(" build)")?;
        Some((version.to_owned(), commit.to_owned(), profile.to_owned()))
    };
    parse()
        .ok_or_else(|| format!("{}: unexpected --version output {line:?}", binary.display()).into())
}

/// Write the layout to `out` (replacing it) and return the image manifest's digest.
pub fn build(out: &Path, binary: &Path, name: Option<&str>) -> Result<String> {
    let bytes = std::fs::read(binary).map_err(|e| {
        format!(
            "{}: {e} (build the static binary with tests/deploy/static-binary.sh)",
            binary.display()
        )
    })?;
    let (version, commit, profile) = binary_build(binary)?;
    if profile != "release" {
        return Err(format!(
            "{} is a {profile} build, not a release build",
            binary.display()
        )
        .into());
    }
    if let Some(head) = git_head() {
        if commit != head {
            return Err(format!(
                "{} was built from commit {commit}, not HEAD {head}: rebuild it (tests/deploy/static-binary.sh)",
                binary.display()
            )
            .into());
        }
    }
    let stage = runtime_stage(&std::fs::read_to_string("Dockerfile")?)?;
    let sbom = serde_json::to_string_pretty(&crate::sbom::document()?)? + "\n";
    let inputs = Inputs {
        stage: &stage,
        binary: bytes,
        epoch: source_date_epoch()?,
        commit: &commit,
        version: &version,
        sbom: sbom.into_bytes(),
        name,
    };
    let (files, digest) = layout(&inputs)?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    for (path, data) in &files {
        let path = out.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(out))?;
        std::fs::write(path, data)?;
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile");

    #[test]
    fn the_runtime_stage_of_the_dockerfile() {
        let stage = runtime_stage(&std::fs::read_to_string(DOCKERFILE).unwrap()).unwrap();
        assert_eq!(stage.user, "65532:65532");
        assert_eq!(stage.entrypoint, ["/fiskil-token-refresher"]);
        assert_eq!(stage.copy_to, "/fiskil-token-refresher");
        assert_eq!(stage.expose, ["9847/tcp"]);
        assert_eq!(
            stage.labels["org.opencontainers.image.licenses"],
            "Apache-2.0"
        );
        assert_eq!(
            stage.labels["org.opencontainers.image.title"],
            "fiskil-token-refresher"
        );
    }

    #[test]
    fn quoted_labels() {
        let pairs = label_pairs(r#"a="x y" b=z c="q\"uote""#).unwrap();
        assert_eq!(
            pairs,
            [
                ("a".into(), "x y".into()),
                ("b".into(), "z".into()),
                ("c".into(), "q\"uote".into())
            ]
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_digest_and_any_change_another() {
        let stage = runtime_stage(&std::fs::read_to_string(DOCKERFILE).unwrap()).unwrap();
        let inputs = |binary: &[u8], epoch| Inputs {
            stage: &stage,
            binary: binary.to_vec(),
            epoch,
            commit: "0123456789abcdef0123456789abcdef01234567",
            version: "0.1.0",
            sbom: b"{}".to_vec(),
            name: None,
        };
        let (files_a, a) = layout(&inputs(b"binary", 1_700_000_000)).unwrap();
        let (files_b, b) = layout(&inputs(b"binary", 1_700_000_000)).unwrap();
        assert_eq!(a, b);
        assert_eq!(files_a, files_b);
        assert_ne!(layout(&inputs(b"binary2", 1_700_000_000)).unwrap().1, a);
        assert_ne!(layout(&inputs(b"binary", 1_700_000_001)).unwrap().1, a);
        // Every blob is named by its digest.
        for (path, data) in &files_a {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(crate::sha256::hex(data), hex);
            }
        }
    }
}
