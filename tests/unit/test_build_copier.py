"""COPY/ADD planning, ownership and mode, and image file system views."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from services.builder import copier
from services.builder.rootfs import RootfsView
from services.common.errors import InvalidArgument


@pytest.fixture
def context(tmp_path: Path) -> copier.SourceTree:
    root = tmp_path / "ctx"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    (root / "dir" / "sub" / "c.txt").write_text("c")
    (root / "link").symlink_to("a.txt")
    return copier.SourceTree(root=root)


@pytest.fixture
def image(tmp_path: Path) -> RootfsView:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/\n")
    (lower / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    (lower / "srv").mkdir()
    (lower / "srv" / "old").write_text("old")
    (lower / "gone").write_text("x")
    (upper / "srv").mkdir(parents=True)
    os.setxattr(upper / "srv", "trusted.overlay.opaque", b"y")
    (upper / "srv" / "new").write_text("new")
    os.mknod(upper / "gone", 0o20600, os.makedev(0, 0))
    return RootfsView([str(upper), str(lower)])


def dests(plan: copier.CopyPlan) -> list[str]:
    return [e.dest for e in plan.entries]


def test_destination_rules(context: copier.SourceTree, image: RootfsView) -> None:
    assert dests(copier.plan_copy(context, ["a.txt"], "/x", "/", image, "COPY")) == ["/x"]
    assert dests(copier.plan_copy(context, ["a.txt"], "/x/", "/", image, "COPY")) == [
        "/x/a.txt"]
    assert dests(copier.plan_copy(context, ["a.txt"], "/srv", "/", image, "COPY")) == [
        "/srv/a.txt"]
    assert dests(copier.plan_copy(context, ["a.txt"], "rel", "/work", image, "COPY")) == [
        "/work/rel"]
    assert dests(copier.plan_copy(context, ["dir"], "/d", "/", image, "COPY")) == [
        "/d", "/d/sub", "/d/sub/c.txt"]
    assert dests(copier.plan_copy(context, ["*.txt"], "/t/", "/", image, "COPY")) == [
        "/t/a.txt", "/t/b.txt"]
    assert dests(copier.plan_copy(context, ["link"], "/l", "/", image, "COPY")) == ["/l"]


def test_source_errors(context: copier.SourceTree, image: RootfsView) -> None:
    with pytest.raises(InvalidArgument, match="must be a directory and end with a /"):
        copier.plan_copy(context, ["a.txt", "b.txt"], "/x", "/", image, "COPY")
    with pytest.raises(InvalidArgument, match="forbidden path outside the build context"):
        copier.plan_copy(context, ["../x"], "/x", "/", image, "COPY")
    with pytest.raises(InvalidArgument, match="no source files were specified"):
        copier.plan_copy(context, ["*.none"], "/x/", "/", image, "COPY")


def test_digest_follows_content_not_mtime(context: copier.SourceTree,
                                          image: RootfsView) -> None:
    def digest() -> str:
        return copier.plan_copy(context, ["dir"], "/d", "/", image, "COPY").digest
    first = digest()
    os.utime(context.root / "dir" / "sub" / "c.txt", (1, 1))
    assert digest() == first
    (context.root / "dir" / "sub" / "c.txt").write_text("changed")
    assert digest() != first


def test_chown_and_chmod(image: RootfsView) -> None:
    assert copier.parse_chown("", image) == copier.Owner(0, 0)
    assert copier.parse_chown("app", image) == copier.Owner(1000, 1001)
    assert copier.parse_chown("app:staff", image) == copier.Owner(1000, 50)
    assert copier.parse_chown("7:8", image) == copier.Owner(7, 8)
    assert copier.parse_chown("7", image) == copier.Owner(7, 7)
    with pytest.raises(InvalidArgument, match="no such user: nobody"):
        copier.parse_chown("nobody", image)
    assert copier.parse_chmod("755", "COPY") == 0o755
    with pytest.raises(InvalidArgument, match="invalid chmod parameter: 99x"):
        copier.parse_chmod("99x", "COPY")


def test_rootfs_view_merges_layers(image: RootfsView) -> None:
    assert image.read_text("/etc/group").startswith("root")
    assert not image.exists("/gone")
    assert image.is_dir("/srv")
    assert list(image.tree("/srv")) == ["new"]
    assert "gone" not in image.tree("/")


def test_layer_writer_adds_missing_parents_only(context: copier.SourceTree, image: RootfsView,
                                                tmp_path: Path) -> None:
    plan = copier.plan_copy(context, ["a.txt"], "/etc/new/dir/", "/", image, "COPY")
    out = tmp_path / "layer.tar"
    with tarfile.open(out, "w") as tar:
        writer = copier.LayerWriter(tar, image, copier.Owner(5, 6), chmod=0o640)
        for entry in plan.entries:
            writer.add(entry)
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar}
    assert list(members) == ["etc/new", "etc/new/dir", "etc/new/dir/a.txt"]
    assert members["etc/new/dir/a.txt"].mode == 0o640
    assert members["etc/new/dir"].mode == 0o755
    assert (members["etc/new"].uid, members["etc/new"].gid) == (5, 6)


def test_add_unpacks_local_archives(context: copier.SourceTree, image: RootfsView,
                                    tmp_path: Path) -> None:
    archive = context.root / "pkg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("pkg/file")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"pkg"))
    plan = copier.plan_copy(context, ["pkg.tar.gz"], "/opt", "/", image, "ADD")
    assert [e.archive for e in plan.entries] == [True]
    out = tmp_path / "layer.tar"
    with tarfile.open(out, "w") as tar:
        writer = copier.LayerWriter(tar, image, copier.Owner())
        for entry in plan.entries:
            writer.add(entry)
    with tarfile.open(out) as tar:
        assert tar.extractfile("opt/pkg/file").read() == b"pkg"
    copied = copier.plan_copy(context, ["pkg.tar.gz"], "/opt/", "/", image, "COPY")
    assert [e.archive for e in copied.entries] == [False]


def test_symlinks_never_leave_the_context(context: copier.SourceTree,
                                          image: RootfsView) -> None:
    root = context.root
    assert root is not None
    (root / "host-etc").symlink_to("/etc")
    (root / "up").symlink_to("../../../a.txt")
    (root / "loop").symlink_to("loop")
    with pytest.raises(InvalidArgument, match="file not found in build context"):
        copier.plan_copy(context, ["host-etc/hostname"], "/x", "/", image, "COPY")
    plan = copier.plan_copy(context, ["up"], "/x", "/", image, "COPY")
    assert [e.host for e in plan.entries] == [root / "a.txt"]
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        copier.plan_copy(context, ["loop"], "/x", "/", image, "COPY")


def test_image_symlinks_resolve_inside_the_image(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    (lower / "usr" / "bin").mkdir(parents=True)
    (lower / "usr" / "bin" / "tool").write_text("tool")
    (lower / "bin").symlink_to("usr/bin")
    (lower / "hostlink").symlink_to("/etc")
    (upper / "hostlink").mkdir(parents=True)
    (upper / "abs").symlink_to("/usr/bin/tool")
    view = RootfsView([str(upper), str(lower)])
    assert view.read_text("/bin/tool") == "tool"
    assert view.read_text("/abs") == "tool"
    assert view.is_dir("/bin")
    assert view.lookup("/hostlink/hostname") is None
    assert list(view.tree("/bin")) == ["tool"]
