"""The generated gRPC code must match protos/ (it is regenerated, never edited)."""

from __future__ import annotations

from pathlib import Path

from hatch_build import generate

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    (tmp_path / "protos").symlink_to(REPO / "protos")
    generate(tmp_path)
    fresh = {p.relative_to(tmp_path / "gen"): p.read_bytes()
             for p in (tmp_path / "gen").rglob("*_pb2*.py")}
    installed = {p.relative_to(REPO / "gen"): p.read_bytes()
                 for p in (REPO / "gen").rglob("*_pb2*.py")}
    stale = sorted(str(path) for path, data in fresh.items() if installed.get(path) != data)
    assert not stale, f"regenerate with `python hatch_build.py`: stale {stale}"
