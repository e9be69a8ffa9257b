"""Extract a tar from stdin into a directory of a container, chrooted into
the container's root (what Docker's chrootarchive does).

Inside the chroot, absolute symlinks in the archive or in the container
resolve to the container's own root, so no entry can land on the host.
Run as `python -m services.container.untar_chroot ROOT DIR OPTIONS_JSON`;
exit status 2 with the message on stderr means the archive was refused.
"""

from __future__ import annotations

# The compression modules tarfile imports lazily must be loaded before the
# chroot hides the interpreter's files.
import bz2  # noqa: F401
import gzip  # noqa: F401
import json
import lzma  # noqa: F401
import os
import sys

from services.common.errors import BerthError
from services.container.archive import ExtractOptions, untar_into

REFUSED = 2


def main(argv: list[str]) -> int:
    root, directory, options_json = argv
    options = json.loads(options_json)
    os.chroot(root)
    os.chdir("/")
    extract = ExtractOptions(no_overwrite_dir_non_dir=options["no_overwrite_dir_non_dir"],
                             owner=tuple(options["owner"]) if options["owner"] else None)
    try:
        untar_into(directory, directory, sys.stdin.buffer.read, extract)
    except BerthError as exc:
        sys.stderr.write(exc.message)
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
