from pathlib import Path

import pytest

from services.common import scoped
from services.common.errors import InvalidArgument


@pytest.fixture
def root(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root")
    (tmp_path / "abs-etc").symlink_to("/etc")
    (tmp_path / "up").symlink_to("../../..")
    (tmp_path / "rel").symlink_to("etc/./passwd")
    return str(tmp_path)


def test_secure_join_never_leaves_the_root(root: str) -> None:
    assert scoped.secure_join(root, "/../../etc/passwd") == f"{root}/etc/passwd"
    assert scoped.secure_join(root, "/abs-etc/passwd") == f"{root}/etc/passwd"
    assert scoped.secure_join(root, "/up/etc") == f"{root}/etc"
    assert scoped.secure_join(root, "/up") == root
    assert scoped.secure_join(root, "rel") == f"{root}/etc/passwd"
    assert scoped.secure_join(root, "/missing/../etc/./passwd") == f"{root}/etc/passwd"


def test_a_trailing_link_is_kept_unless_followed(root: str) -> None:
    assert scoped.secure_join(root, "/up", follow_last=False) == f"{root}/up"
    assert scoped.secure_join(root, "/abs-etc/passwd", follow_last=False) == f"{root}/etc/passwd"


def test_link_loops_are_refused(root: str) -> None:
    Path(root, "loop").symlink_to("/loop")
    with pytest.raises(InvalidArgument, match="/loop/x: too many levels of symbolic links"):
        scoped.secure_join(root, "/loop/x")


def test_any_tree_through_its_link_reader() -> None:
    links = {("bin",): "usr/bin", ("usr", "bin", "sh"): "/bin/busybox"}
    assert scoped.resolve("/bin/sh", lambda parts: links.get(tuple(parts))) == [
        "usr", "bin", "busybox"]
