"""Generate the gRPC Python code from protos/ at build time.

The generated modules (berth.<service>.v1.*_pb2, and the Kubernetes CRI as
k8s.runtime.v1.api_pb2) live in gen/, which is not committed; every wheel and
editable install regenerates them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGES = ("berth", "k8s")  # top-level folders of protos/, one Python package each


def generate(root: Path) -> None:
    from grpc_tools import protoc  # build requirement

    protos = root / "protos"
    out = root / "gen"
    out.mkdir(exist_ok=True)
    sources = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{protos}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for top in PACKAGES:
        for package_dir in (out / top).rglob("*"):
            if package_dir.is_dir():
                (package_dir / "__init__.py").touch()
        (out / top / "__init__.py").touch()


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        generate(Path(self.root))
        # An editable install reads gen/ in place (dev-mode-dirs); a copy in
        # site-packages would shadow it and go stale at the next proto edit.
        if self.target_name == "wheel" and version != "editable":
            for top in PACKAGES:
                build_data["force_include"][str(Path(self.root) / "gen" / top)] = top


if __name__ == "__main__":
    generate(Path(__file__).parent)
