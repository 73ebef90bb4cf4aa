//! `cargo xtask sbom`: a CycloneDX 1.5 JSON SBOM of what is compiled into the binary, from
//! `cargo metadata` (the resolved graph for one target) and `Cargo.lock` (checksums).
//!
//! Components are the packages reached from the binary's package through normal dependencies on
//! the target platform. Build dependencies, dev dependencies and proc-macro crates run at build
//! time only and are left out, as are the crates behind them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::{git_head, rfc3339, run, source_date_epoch, Result, BINARY_PACKAGE, TARGET};

/// `name version` -> checksum, from Cargo.lock's `[[package]]` entries.
fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for block in lock.split("[[package]]") {
        let field = |key: &str| {
            block.lines().find_map(|line| {
                line.strip_prefix(key)
                    .and_then(|r| r.trim().strip_prefix('='))
                    .map(|v| v.trim().trim_matches('"').to_owned())
            })
        };
        if let (Some(name), Some(version), Some(sum)) =
            (field("name "), field("version "), field("checksum "))
        {
            out.insert((name, version), sum);
        }
    }
    out
}

/// An SPDX licence expression from Cargo's `license` field ("MIT/Apache-2.0" is the old form of
/// "MIT OR Apache-2.0").
pub fn spdx_expression(license: &str) -> String {
    license
        .split('/')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" OR ")
}

fn purl(name: &str, version: &str) -> String {
    format!("pkg:cargo/{name}@{version}")
}

/// The SBOM document for the workspace in the current directory.
pub fn document() -> Result<Value> {
    let metadata = run(
        "cargo",
        &[
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            TARGET,
        ],
    )?;
    let metadata: Value = serde_json::from_str(&metadata)?;
    let lock = std::fs::read_to_string("Cargo.lock")?;
    let checksums = lock_checksums(&lock);

    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata: no packages")?
        .iter()
        .map(|p| (p["id"].as_str().unwrap_or_default(), p))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata: no resolve graph")?
        .iter()
        .map(|n| (n["id"].as_str().unwrap_or_default(), n))
        .collect();
    let root = packages
        .values()
        .find(|p| p["name"] == BINARY_PACKAGE && p["source"].is_null())
        .ok_or("cargo metadata: no fiskil-token-refresher package")?;
    let root_id = root["id"].as_str().unwrap_or_default();
    let is_proc_macro = |id: &str| {
        packages[id]["targets"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            })
        })
    };

    // Walk normal dependency edges; record each package's runtime dependencies.
    let mut reached: BTreeSet<&str> = BTreeSet::from([root_id]);
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut todo = vec![root_id];
    while let Some(id) = todo.pop() {
        let node = nodes
            .get(id)
            .ok_or_else(|| format!("cargo metadata: no node for {id}"))?;
        let mut deps = BTreeSet::new();
        for dep in node["deps"].as_array().into_iter().flatten() {
            let dep_id = dep["pkg"].as_str().unwrap_or_default();
            let normal = dep["dep_kinds"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()));
            if !normal || is_proc_macro(dep_id) {
                continue;
            }
            deps.insert(dep_id);
            if reached.insert(dep_id) {
                todo.push(dep_id);
            }
        }
        edges.insert(id, deps);
    }

    let bom_ref = |id: &str| {
        let p = packages[id];
        purl(
            p["name"].as_str().unwrap_or_default(),
            p["version"].as_str().unwrap_or_default(),
        )
    };
    let mut components = Vec::new();
    for &id in reached.iter().filter(|&&id| id != root_id) {
        let p = packages[id];
        let (name, version) = (
            p["name"].as_str().unwrap_or_default(),
            p["version"].as_str().unwrap_or_default(),
        );
        let mut c = json!({
            "type": "library",
            "bom-ref": bom_ref(id),
            "name": name,
            "version": version,
            "purl": purl(name, version),
            "scope": "required",
        });
        if let Some(license) = p["license"].as_str() {
            c["licenses"] = json!([{ "expression": spdx_expression(license) }]);
        }
        if let Some(sum) = checksums.get(&(name.to_owned(), version.to_owned())) {
            c["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        if let Some(desc) = p["description"].as_str() {
            c["description"] = json!(desc.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        components.push(c);
    }
    components.sort_by(|a, b| {
        (a["name"].as_str(), a["version"].as_str())
            .cmp(&(b["name"].as_str(), b["version"].as_str()))
    });
    let dependencies: Vec<Value> = edges
        .iter()
        .map(|(&id, deps)| {
            json!({ "ref": bom_ref(id), "dependsOn": deps.iter().map(|&d| bom_ref(d)).collect::<Vec<_>>() })
        })
        .collect();

    let commit = git_head().unwrap_or_else(|| "unknown".to_owned());
    let epoch = source_date_epoch()?;
    let version = root["version"].as_str().unwrap_or_default();
    // A serial number that is the same for the same commit and lock file.
    let digest = crate::sha256::hex(format!("{commit}\n{lock}").as_bytes());
    let serial = format!(
        "urn:uuid:{}-{}-5{}-8{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[13..16],
        &digest[17..20],
        &digest[20..32]
    );
    let mut root_component = json!({
        "type": "application",
        "bom-ref": purl(BINARY_PACKAGE, version),
        "name": BINARY_PACKAGE,
        "version": version,
        "purl": purl(BINARY_PACKAGE, version),
        "properties": [
            { "name": "git:commit", "value": commit },
            { "name": "cargo:target", "value": TARGET },
        ],
    });
    if let Some(license) = root["license"].as_str() {
        root_component["licenses"] = json!([{ "expression": spdx_expression(license) }]);
    }
    if let Some(desc) = root["description"].as_str() {
        root_component["description"] = json!(desc);
    }
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(epoch),
            "tools": { "components": [{ "type": "application", "name": "cargo xtask sbom", "version": env!("CARGO_PKG_VERSION") }] },
            "component": root_component,
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_style_licences_become_spdx_expressions() {
        assert_eq!(spdx_expression("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(spdx_expression("MIT OR Apache-2.0"), "MIT OR Apache-2.0");
    }

    #[test]
    fn checksums_come_from_the_lock_file() {
        let lock = "version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\nchecksum = \"abc\"\n\n[[package]]\nname = \"local\"\nversion = \"0.1.0\"\n";
        let sums = lock_checksums(lock);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[&("a".into(), "1.0.0".into())], "abc");
    }
}
