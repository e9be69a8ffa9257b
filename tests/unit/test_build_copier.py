"""COPY/ADD: finding sources in the context, destination rules, the digest,
ownership and mode, and the layer tar."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from services.builder import copier
from services.common.errors import InvalidArgument

PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/\n"
GROUP = "root:x:0:\nstaff:x:50:\napp:x:2000:\n"
IN_IMAGE = {"/etc", "/etc/passwd", "/etc/group", "/srv"}
ROOT = copier.Owner()


@pytest.fixture
def context(tmp_path: Path) -> copier.ContextTree:
    root = tmp_path / "ctx"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    (root / "dir" / "sub" / "c.txt").write_text("c")
    (root / "link").symlink_to("a.txt")
    return copier.ContextTree(root)


def read(tree: copier.SourceTree, sources: list[str], dest: str = "/d/",
         instruction: str = "COPY") -> copier.CopySources:
    located = asyncio.run(copier.locate(tree, sources, instruction))
    return copier.read_sources(located, dest, instruction, tree.digests)


def dests(tree: copier.SourceTree, sources: list[str], dest: str, workdir: str = "/",
          instruction: str = "COPY") -> list[str]:
    target = copier.destination(dest, workdir)
    into_dir = copier.names_directory(dest) or target in {"/srv", "/etc"}
    copy = read(tree, sources, dest, instruction)
    return [e.dest for e in copier.plan_copy(copy, target, into_dir, instruction)]


def test_destination_rules(context: copier.ContextTree) -> None:
    assert dests(context, ["a.txt"], "/x") == ["/x"]
    assert dests(context, ["a.txt"], "/x/") == ["/x/a.txt"]
    assert dests(context, ["a.txt"], "/srv") == ["/srv/a.txt"]
    assert dests(context, ["a.txt"], "rel", "/work") == ["/work/rel"]
    assert dests(context, ["dir"], "/d") == ["/d", "/d/sub", "/d/sub/c.txt"]
    assert dests(context, ["*.txt"], "/t/") == ["/t/a.txt", "/t/b.txt"]
    assert dests(context, ["dir/*/c.txt"], "/t/") == ["/t/c.txt"]
    assert dests(context, ["link"], "/l") == ["/l"]


def test_kinds_name_the_sources(context: copier.ContextTree) -> None:
    assert read(context, ["a.txt"]).kind == "file"
    assert read(context, ["dir"]).kind == "dir"
    assert read(context, ["a.txt", "dir"]).kind == "multi"


def test_source_errors(context: copier.ContextTree) -> None:
    with pytest.raises(InvalidArgument, match="must be a directory and end with a /"):
        read(context, ["a.txt", "b.txt"], "/x")
    with pytest.raises(InvalidArgument, match="forbidden path outside the build context"):
        read(context, ["../x"])
    with pytest.raises(InvalidArgument, match="no source files were specified"):
        read(context, ["*.none"])


def test_digest_follows_names_and_content_not_mtime(context: copier.ContextTree) -> None:
    def digest(sources: list[str]) -> str:
        return read(context, sources).digest
    first = digest(["dir"])
    os.utime(context.root / "dir" / "sub" / "c.txt", (1, 1))
    assert digest(["dir"]) == first
    (context.root / "dir" / "sub" / "c.txt").write_text("changed")
    assert digest(["dir"]) != first
    (context.root / "b.txt").write_text("a")
    assert digest(["a.txt"]) != digest(["b.txt"]), "the name decides where a file lands"


def test_chown_and_chmod() -> None:
    assert copier.parse_chown("") == copier.Owner(0, 0)
    assert copier.parse_chown("app", PASSWD, GROUP) == copier.Owner(1000, 2000)
    assert copier.parse_chown("app:staff", PASSWD, GROUP) == copier.Owner(1000, 50)
    assert copier.parse_chown("7:8") == copier.Owner(7, 8)
    assert copier.parse_chown("7") == copier.Owner(7, 7)
    with pytest.raises(InvalidArgument, match="no such user: nobody"):
        copier.parse_chown("nobody", PASSWD)
    with pytest.raises(InvalidArgument, match="no such group: wheel"):
        copier.parse_chown("7:wheel", "", GROUP)
    with pytest.raises(InvalidArgument, match="can't find gid for group root7: no such group"):
        copier.parse_chown("root7", "root7:x:7:7::/:/\n", GROUP)
    with pytest.raises(InvalidArgument, match="invalid chown string format: a:b:c"):
        copier.chown_names("a:b:c")
    assert copier.chown_names("app:staff") == (True, True)
    assert copier.chown_names("7:staff") == (False, True)
    assert copier.chown_names("app") == (True, True)
    assert copier.chown_names("7:8") == (False, False)
    assert copier.parse_chmod("755", "COPY") == 0o755
    with pytest.raises(InvalidArgument, match="invalid chmod parameter: 99x"):
        copier.parse_chmod("99x", "COPY")


def write_layer(path: Path, entries: list[copier.Entry], owner: copier.Owner = ROOT,
                chmod: int | None = None, asked: list[str] | None = None
                ) -> dict[str, tarfile.TarInfo]:
    asked = [] if asked is None else asked

    def in_parent(candidate: str) -> bool:
        asked.append(candidate)
        return candidate in IN_IMAGE
    with tarfile.open(path, "w") as tar:
        writer = copier.LayerWriter(tar, in_parent, owner, chmod)
        for entry in entries:
            writer.add(entry)
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar}


def test_layer_writer_adds_missing_parents_only(context: copier.ContextTree,
                                                tmp_path: Path) -> None:
    copy = read(context, ["a.txt"], "/etc/new/dir/")
    entries = copier.plan_copy(copy, "/etc/new/dir", True, "COPY")
    asked: list[str] = []
    members = write_layer(tmp_path / "layer.tar", entries, copier.Owner(5, 6), chmod=0o640,
                          asked=asked)
    assert asked == ["/etc", "/etc/new", "/etc/new/dir"], "only the destination's parents"
    assert list(members) == ["etc/new", "etc/new/dir", "etc/new/dir/a.txt"]
    assert members["etc/new/dir/a.txt"].mode == 0o640
    assert members["etc/new/dir"].mode == 0o755
    assert (members["etc/new"].uid, members["etc/new"].gid) == (5, 6)


def test_directories_a_layer_makes_have_its_time(context: copier.ContextTree,
                                                  tmp_path: Path) -> None:
    """As dockerd: the directories a COPY makes get the time of the step;
    the copied paths keep their own mtimes."""
    os.utime(context.root / "dir" / "sub", (1, 1))
    copy = read(context, ["dir"], "/new/dir/")
    before = int(time.time())
    members = write_layer(tmp_path / "layer.tar",
                          copier.plan_copy(copy, "/new/dir", True, "COPY"))
    after = time.time()
    for made in ("new", "new/dir"):
        assert before <= members[made].mtime <= after, made
    assert members["new/dir/sub"].mtime == 1
    assert members["new/dir/sub/c.txt"].mtime == os.stat(
        context.root / "dir" / "sub" / "c.txt").st_mtime


def test_add_unpacks_local_archives(context: copier.ContextTree, tmp_path: Path) -> None:
    archive = context.root / "pkg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("pkg/file")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"pkg"))
    entries = copier.plan_copy(read(context, ["pkg.tar.gz"], "/opt", "ADD"), "/opt", False,
                               "ADD")
    assert [e.archive for e in entries] == [True]
    write_layer(tmp_path / "layer.tar", entries)
    with tarfile.open(tmp_path / "layer.tar") as tar:
        assert tar.extractfile("opt/pkg/file").read() == b"pkg"
    copied = copier.plan_copy(read(context, ["pkg.tar.gz"], "/opt/"), "/opt", True, "COPY")
    assert [e.archive for e in copied] == [False]


def test_symlinks_never_leave_the_context(context: copier.ContextTree) -> None:
    root = context.root
    (root / "host-etc").symlink_to("/etc")
    (root / "up").symlink_to("../../../a.txt")
    (root / "loop").symlink_to("loop")
    with pytest.raises(InvalidArgument, match="file not found in build context"):
        read(context, ["host-etc/hostname"])
    assert [s.host for s in read(context, ["up"]).sources] == [root / "a.txt"]
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        read(context, ["loop"])


def test_wildcard_matches_that_are_links_copy_their_targets(context: copier.ContextTree
                                                            ) -> None:
    (context.root / "dir" / "sub" / "d.txt").symlink_to("../../a.txt")
    found = read(context, ["dir/sub/*.txt"]).sources
    assert [(s.name, s.host) for s in found] == [
        ("dir/sub/c.txt", context.root / "dir" / "sub" / "c.txt"),
        ("dir/sub/d.txt", context.root / "a.txt")]
