#!/usr/bin/env python3
"""Write a one-layer OCI image archive (an OCI image layout in a tar file) without a registry.

    oci_image.py refresher --dockerfile Dockerfile --binary BIN --name NAME --out OUT.tar
    oci_image.py busybox --binary /bin/busybox --name NAME --out OUT.tar
    oci_image.py pause --binary PAUSE --name NAME --out OUT.tar

`ctr images import` reads the result; the image is named by the index's
io.containerd.image.name annotation. The layer is reproducible: files sorted,
owned by 0:0, mtime 0.

refresher: the Dockerfile's runtime stage as far as the pod sees it: the static
binary at the path the Dockerfile copies it to, its USER, ENTRYPOINT, EXPOSE and
LABELs read from the Dockerfile; /etc/passwd, /etc/group and /tmp as in
distroless/static; no shell. busybox: the static busybox with a link for each
applet in /bin. pause: the sandbox binary, run as 65535 like upstream's image.
"""

import argparse
import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import tarfile

PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


class Layer:
    """A root filesystem assembled in memory as an uncompressed tar layer."""

    def __init__(self):
        self.entries = {}

    def dir(self, path, mode=0o755, owner=0):
        self.entries[path] = ("dir", mode, None, owner)

    def file(self, path, data, mode=0o644):
        self.entries[path] = ("file", mode, data, 0)

    def link(self, path, target):
        self.entries[path] = ("symlink", 0o777, target, 0)

    def tar(self):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, mode, data, owner = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mode, info.uid, info.gid, info.mtime = mode, owner, owner, 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, data
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def runtime_stage(dockerfile):
    """USER, ENTRYPOINT, EXPOSE, LABELs and the binary's path from the Dockerfile's last stage."""
    text = read(dockerfile).decode()
    text = re.sub(r"\\\n", " ", text)
    stage = text[text.rindex("\nFROM ") :]
    found = {"labels": {}, "expose": []}
    for line in stage.splitlines():
        words = line.strip().split(None, 1)
        if len(words) != 2:
            continue
        instruction, rest = words[0].upper(), words[1]
        if instruction == "USER":
            found["user"] = rest.strip()
        elif instruction == "ENTRYPOINT":
            found["entrypoint"] = json.loads(rest)
        elif instruction == "EXPOSE":
            found["expose"] += rest.split()
        elif instruction == "LABEL":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                found["labels"][key] = value
        elif instruction == "COPY":
            found["copy_to"] = rest.split()[-1]
    for key in ("user", "entrypoint", "copy_to"):
        if key not in found:
            sys.exit(f"oci_image.py: no {key.upper()} in the last stage of {dockerfile}")
    return found


def refresher(args):
    stage = runtime_stage(args.dockerfile)
    layer = Layer()
    for d in ("etc", "home"):
        layer.dir(d)
    layer.dir("tmp", 0o1777)
    layer.dir("home/nonroot", 0o700, owner=65532)
    layer.file("etc/passwd", PASSWD.encode())
    layer.file("etc/group", GROUP.encode())
    layer.file(stage["copy_to"].lstrip("/"), read(args.binary), 0o755)
    config = {
        "User": stage["user"],
        "Entrypoint": stage["entrypoint"],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "ExposedPorts": {f"{p}/tcp" if "/" not in p else p: {} for p in stage["expose"]},
        "Labels": stage["labels"],
    }
    return layer, config


def busybox(args):
    layer = Layer()
    for d in ("bin", "etc"):
        layer.dir(d)
    layer.dir("tmp", 0o1777)
    layer.file("etc/passwd", PASSWD.encode())
    layer.file("etc/group", GROUP.encode())
    layer.file("bin/busybox", read(args.binary), 0o755)
    applets = subprocess.run([args.binary, "--list"], check=True, capture_output=True, text=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            layer.link(f"bin/{applet}", "busybox")
    config = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}
    return layer, config


def pause(args):
    layer = Layer()
    layer.file("pause", read(args.binary), 0o755)
    config = {"User": "65535:65535", "Entrypoint": ["/pause"]}
    return layer, config


def blob(tar, data, media_type):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def write_archive(out, name, layer_tar, config):
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
        "history": [{"created_by": "tests/cluster/oci_image.py"}],
    }
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        layer_desc = blob(tar, layer_tar, "application/vnd.oci.image.layer.v1.tar")
        config_desc = blob(
            tar, json.dumps(image_config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json"
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = blob(tar, json.dumps(manifest, sort_keys=True).encode(), manifest["mediaType"])
        manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
        manifest_desc["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
        }
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}
        for path, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index, sort_keys=True).encode()),
        ):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["refresher", "busybox", "pause"])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--name", required=True, help="fully qualified, e.g. docker.io/library/NAME:TAG")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dockerfile")
    args = parser.parse_args()
    if args.kind == "refresher" and not args.dockerfile:
        parser.error("refresher needs --dockerfile")
    layer, config = {"refresher": refresher, "busybox": busybox, "pause": pause}[args.kind](args)
    write_archive(args.out, args.name, layer.tar(), config)


if __name__ == "__main__":
    main()
