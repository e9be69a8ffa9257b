import os
from pathlib import Path

from services.common import whiteouts


def test_whiteouts_are_00_character_devices(tmp_path: Path) -> None:
    whiteouts.make_whiteout(tmp_path / "gone")
    (tmp_path / "kept").write_text("x")
    assert whiteouts.is_whiteout(os.lstat(tmp_path / "gone"))
    assert not whiteouts.is_whiteout(os.lstat(tmp_path / "kept"))


def test_opaque_directories_carry_the_overlay_xattr(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "replaced").mkdir()
    whiteouts.make_opaque(tmp_path / "replaced")
    assert whiteouts.is_opaque(tmp_path / "replaced")
    assert not whiteouts.is_opaque(tmp_path / "plain")
    assert not whiteouts.is_opaque(tmp_path / "missing")
