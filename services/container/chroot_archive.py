"""Tar and untar a container's files from a child process chrooted into the
container's root (what Docker's chrootarchive does).

Inside the chroot, absolute symlinks (in an archive or planted by the
container's processes, even while we walk) resolve to the container's own
root, so nothing is read from or written to the host.

  python -m services.container.chroot_archive tar ROOT PATH      tar of PATH to stdout
  python -m services.container.chroot_archive tree ROOT          tar of the whole root
  python -m services.container.chroot_archive layer ROOT         ROOT (an upperdir) as a layer
  python -m services.container.chroot_archive untar ROOT DIR OPTIONS_JSON   stdin into DIR

Exit status 2 with the message on stderr means the request was refused.
"""

from __future__ import annotations

# The modules tarfile imports lazily must be loaded before the chroot hides
# the interpreter's files.
import bz2  # noqa: F401
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import sys

from services.common.errors import BerthError
from services.container import archive, changes

REFUSED = 2


def _untar(directory: str, options_json: str) -> None:
    options = json.loads(options_json)
    extract = archive.ExtractOptions(
        no_overwrite_dir_non_dir=options["no_overwrite_dir_non_dir"],
        owner=tuple(options["owner"]) if options["owner"] else None)
    # A buffer as wide as the pipe: tarfile's 10 KiB reads need no syscall each.
    with open(sys.stdin.fileno(), "rb", buffering=1 << 20, closefd=False) as stdin:
        archive.untar_into(directory, directory, stdin.read, extract)


def main(argv: list[str]) -> int:
    command, root, *rest = argv
    os.chroot(root)
    os.chdir("/")
    out = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)  # noqa: SIM115
    try:
        if command == "tar":
            archive.write_tar("/", rest[0], out.write)
        elif command == "tree":
            archive.write_tree_tar("/", out.write)
        elif command == "layer":
            changes.write_layer_tar("/", out.write)
        elif command == "untar":
            _untar(rest[0], rest[1])
        else:
            raise SystemExit(f"unknown command {command}")
        out.flush()
    except BerthError as exc:
        sys.stderr.write(exc.message)
        return REFUSED
    except BrokenPipeError:
        pass    # the reader went away
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
