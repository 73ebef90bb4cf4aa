#!/usr/bin/env python3
"""Check an OCI image layout written by `cargo xtask image` against the Dockerfile.

    check_image.py LAYOUT_DIR --dockerfile Dockerfile --binary BIN --commit SHA --epoch N --version V

Independent of the Rust code that wrote it: the Dockerfile's runtime stage is read by
tests/cluster/oci_image.py (the e2e image's parser). Checks that the image's files and config are
those of the e2e suite's image (oci_image.py refresher), and every blob's digest and size, the
layer's exact file list, owners, modes and times, that the binary is the one given, the config's
USER, ENTRYPOINT, EXPOSE, LABELs and OCI annotations, and the SBOM referrer. Exits non-zero with
the first mismatch.
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import sys
import tarfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
import oci_image  # noqa: E402


def fail(msg):
    sys.exit(f"check_image.py: {msg}")


def blob(layout, desc):
    algo, _, hexd = desc["digest"].partition(":")
    if algo != "sha256":
        fail(f"digest {desc['digest']} is not sha256")
    with open(os.path.join(layout, "blobs", "sha256", hexd), "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != hexd:
        fail(f"blob {hexd} does not match its digest")
    if len(data) != desc["size"]:
        fail(f"blob {hexd} is {len(data)} bytes, its descriptor says {desc['size']}")
    return data


def main():
    p = argparse.ArgumentParser()
    p.add_argument("layout")
    p.add_argument("--dockerfile", required=True)
    p.add_argument("--binary", required=True)
    p.add_argument("--commit", required=True)
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--version", required=True)
    a = p.parse_args()

    stage = oci_image.runtime_stage(a.dockerfile)
    created = datetime.datetime.fromtimestamp(a.epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(os.path.join(a.layout, "oci-layout")) as f:
        if json.load(f) != {"imageLayoutVersion": "1.0.0"}:
            fail("oci-layout is not version 1.0.0")
    with open(os.path.join(a.layout, "index.json")) as f:
        index = json.load(f)
    images = [m for m in index["manifests"] if "artifactType" not in m]
    artifacts = [m for m in index["manifests"] if "artifactType" in m]
    if len(images) != 1 or len(artifacts) != 1:
        fail(f"index.json should list one image and one SBOM, lists {index['manifests']}")
    image_desc = images[0]
    if image_desc["platform"] != {"architecture": "amd64", "os": "linux"}:
        fail(f"platform {image_desc['platform']}")
    manifest = json.loads(blob(a.layout, image_desc))
    config = json.loads(blob(a.layout, manifest["config"]))
    if len(manifest["layers"]) != 1:
        fail("more than one layer")
    layer_bytes = blob(a.layout, manifest["layers"][0])
    if manifest["layers"][0]["mediaType"] != "application/vnd.oci.image.layer.v1.tar":
        fail("layer is not an uncompressed OCI tar")
    if config["rootfs"]["diff_ids"] != ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]:
        fail("rootfs.diff_ids does not name the layer")

    # The layer: exactly these entries, owners, modes; every time the commit time.
    with open(a.binary, "rb") as f:
        binary = f.read()
    want = {
        "etc": ("dir", 0o755, 0),
        "etc/group": ("file", 0o644, 0),
        "etc/passwd": ("file", 0o644, 0),
        "home": ("dir", 0o755, 0),
        "home/nonroot": ("dir", 0o700, 65532),
        "tmp": ("dir", 0o1777, 0),
        stage["copy_to"].lstrip("/"): ("file", 0o755, 0),
    }
    tar = tarfile.open(fileobj=io.BytesIO(layer_bytes))
    members = tar.getmembers()
    names = [m.name for m in members]
    if names != sorted(names):
        fail(f"layer entries are not sorted: {names}")
    got = {m.name: ("dir" if m.isdir() else "file" if m.isfile() else m.type, m.mode, m.uid) for m in members}
    if got != want:
        fail(f"layer entries {got}, want {want}")
    for m in members:
        if m.gid != m.uid or m.mtime != a.epoch or m.uname or m.gname:
            fail(f"{m.name}: gid {m.gid}, mtime {m.mtime}, names {m.uname!r}/{m.gname!r}")
    if tar.extractfile(stage["copy_to"].lstrip("/")).read() != binary:
        fail("the layer's binary is not the one given")
    if tar.extractfile("etc/passwd").read().decode() != oci_image.PASSWD:
        fail("/etc/passwd differs from the e2e image's")

    # The same root filesystem, byte for byte apart from times, as the e2e suite's image
    # (tests/cluster/oci_image.py refresher), which the node runs today.
    e2e_layer, e2e_config = oci_image.refresher(argparse.Namespace(dockerfile=a.dockerfile, binary=a.binary))
    e2e = {path: (kind, mode, owner) for path, (kind, mode, _data, owner) in e2e_layer.entries.items()}
    ours = {m.name: ("dir" if m.isdir() else "file", m.mode, m.uid) for m in members}
    if e2e != ours:
        fail(f"layer entries {ours} differ from the e2e image's {e2e}")
    for path, (kind, _mode, data, _owner) in e2e_layer.entries.items():
        if kind == "file" and tar.extractfile(path).read() != data:
            fail(f"{path} differs from the e2e image's")
    for key in ("User", "Entrypoint", "Env", "ExposedPorts"):
        if config["config"][key] != e2e_config[key]:
            fail(f"config {key} {config['config'][key]} differs from the e2e image's {e2e_config[key]}")

    # The config: what the Dockerfile's runtime stage says, plus the OCI labels.
    c = config["config"]
    if c["User"] != stage["user"] or c["Entrypoint"] != stage["entrypoint"]:
        fail(f"User {c['User']} / Entrypoint {c['Entrypoint']}, Dockerfile says {stage['user']} / {stage['entrypoint']}")
    ports = {f"{p}/tcp" if "/" not in p else p: {} for p in stage["expose"]}
    if c["ExposedPorts"] != ports:
        fail(f"ExposedPorts {c['ExposedPorts']}, Dockerfile says {ports}")
    oci = {
        "org.opencontainers.image.revision": a.commit,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.version": a.version,
    }
    if c["Labels"] != {**stage["labels"], **oci}:
        fail(f"Labels {c['Labels']}, want {stage['labels']} and {oci}")
    if manifest.get("annotations") != oci:
        fail(f"manifest annotations {manifest.get('annotations')}, want {oci}")
    if config["created"] != created or config["os"] != "linux" or config["architecture"] != "amd64":
        fail(f"config created/os/architecture: {config['created']} {config['os']} {config['architecture']}")

    # The SBOM: a referrer of this image, CycloneDX, naming this version and commit.
    ref = json.loads(blob(a.layout, artifacts[0]))
    subject = {k: image_desc[k] for k in ("mediaType", "digest", "size")}
    if ref["subject"] != subject or ref["artifactType"] != "application/vnd.cyclonedx+json":
        fail(f"SBOM referrer subject {ref['subject']}, want {subject}")
    sbom = json.loads(blob(a.layout, ref["layers"][0]))
    if sbom["bomFormat"] != "CycloneDX" or sbom["metadata"]["component"]["version"] != a.version:
        fail("SBOM is not a CycloneDX document for this version")
    props = {p["name"]: p["value"] for p in sbom["metadata"]["component"]["properties"]}
    if props.get("git:commit") != a.commit:
        fail(f"SBOM names commit {props.get('git:commit')}")
    names = {x["name"] for x in sbom["components"]}
    if not {"rustls", "ring", "kube-client", "tokio"} <= names or "syn" in names:
        fail("SBOM components should include rustls, ring, kube-client, tokio and no proc-macro crates")
    if any(not x.get("licenses") for x in sbom["components"]):
        fail("an SBOM component has no licence")
    print(
        f"ok: {image_desc['digest']}: layer {len(layer_bytes)} bytes, {len(members)} entries; "
        f"SBOM {len(sbom['components'])} components"
    )


if __name__ == "__main__":
    main()
