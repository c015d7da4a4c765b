#!/usr/bin/env python3
"""Build a one-layer OCI image archive from a directory, for `ctr images import` (no registry
is reachable here, so the pod sandbox image is made locally from busybox-static).

    oci_image.py ROOTFS_DIR ARCHIVE NAME ENTRYPOINT [ARG...]

ARCHIVE is an OCI image layout in a tar (oci-layout, index.json, blobs/sha256/...) whose index
names the image NAME (annotation io.containerd.image.name); the layer is ROOTFS_DIR as an
uncompressed tar, owned by root; the config runs ENTRYPOINT with its arguments.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def layer_of(rootfs: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
            "size": len(blob), **extra}


def main(argv: list[str]) -> int:
    rootfs, archive, name, *entrypoint = argv
    layer = layer_of(Path(rootfs))
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [descriptor(LAYER, layer)["digest"]]},
    }).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": descriptor(CONFIG, config),
                           "layers": [descriptor(LAYER, layer)]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [descriptor(
        MANIFEST, manifest, annotations={"io.containerd.image.name": name})]}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
    for blob in (layer, config, manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    with tarfile.open(archive, "w") as tar:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for arcname, data in files.items():
            info = tarfile.TarInfo(arcname)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
