"""Test images built from Debian's busybox-static, as docker-archive tars.

Nothing can be pulled from the internet here, so tests `docker load` these.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
EPOCH = 1700000000

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""

GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:12:
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65534:
"""


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = EPOCH
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = EPOCH
    tar.addfile(info, io.BytesIO(data))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mtime = EPOCH
    tar.addfile(info)


def files_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of regular files: a layer, or an archive's members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            _add_file(tar, name, data)
    return buf.getvalue()


def file_layer(data: bytes, name: str = "data.bin") -> bytes:
    """An uncompressed layer of one file."""
    return files_tar({name: data})


def busybox_rootfs_tar() -> bytes:
    """An uncompressed layer: busybox with every applet, /etc/passwd, /etc/group."""
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "dev", "etc", "home", "proc", "root", "sys", "usr",
                          "usr/bin", "usr/sbin", "sbin", "var", "var/www", "var/spool",
                          "var/spool/mail"):
            _add_dir(tar, directory, 0o700 if directory == "root" else 0o755)
        _add_dir(tar, "tmp", 0o1777)
        _add_file(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in applets:
            if applet != "bin/busybox":
                _add_symlink(tar, applet, "/bin/busybox")
        _add_file(tar, "etc/passwd", PASSWD.encode())
        _add_file(tar, "etc/group", GROUP.encode())
    return buf.getvalue()


def image_archive(layers: list[bytes], repo_tags: list[str], config_overrides: dict | None = None,
                  compress: bool = False) -> bytes:
    """A docker-archive tar (manifest.json, repositories, config, layers)."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = {
        "architecture": "amd64", "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z",
                     "created_by": "/bin/sh -c #(nop) ADD busybox-static in / "}
                    for _ in layers],
    }
    if config_overrides:
        config["config"].update(config_overrides)
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add_file(tar, f"{config_id}.json", config_bytes)
        layer_paths = []
        for layer in layers:
            blob = gzip.compress(layer, mtime=0) if compress else layer
            path = f"{hashlib.sha256(blob).hexdigest()}/layer.tar"
            _add_dir(tar, path.split("/")[0])
            _add_file(tar, path, blob)
            layer_paths.append(path)
        manifest = [{"Config": f"{config_id}.json", "RepoTags": repo_tags,
                     "Layers": layer_paths}]
        _add_file(tar, "manifest.json", json.dumps(manifest).encode())
        repositories: dict[str, dict[str, str]] = {}
        for ref in repo_tags:
            name, _, tag = ref.rpartition(":")
            repositories.setdefault(name, {})[tag] = config_id
        _add_file(tar, "repositories", json.dumps(repositories).encode())
    return buf.getvalue()


def busybox_archive(path: Path, repo_tags: list[str] | None = None) -> Path:
    """Write the busybox image archive to `path` (once) and return it."""
    if not path.exists():
        path.write_bytes(image_archive([busybox_rootfs_tar()], repo_tags or ["busybox:latest"]))
    return path
