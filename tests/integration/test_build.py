"""docker build (legacy builder) through the real docker CLI and SDK: steps,
the layer cache, COPY/ADD semantics, multi-stage builds and bad input."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import docker.errors
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine import BERTH, DOCKER_CLI, REPO, Engine
from tests.support.registry import running_registry


def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def build(engine: Engine, context: Path, *args: str, check: bool = True):
    return engine.docker("build", *args, str(context), check=check, timeout=180)


def inspect(engine: Engine, name: str) -> dict:
    return json.loads(engine.docker("image", "inspect", name).stdout)[0]


def top_layer(engine: Engine, name: str, index: int = -1
              ) -> dict[str, tarfile.TarInfo | bytes]:
    """One layer of an image (from docker save; the newest by default):
    name -> info, and name + '#data' -> bytes for regular files."""
    entries: dict[str, tarfile.TarInfo | bytes] = {}
    saved = io.BytesIO(engine.docker("save", name).stdout)
    with tarfile.open(fileobj=saved) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        layer = archive.extractfile(manifest[0]["Layers"][index])
        with tarfile.open(fileobj=layer) as layer_tar:
            for member in layer_tar:
                entries[member.name] = member
                if member.isreg():
                    entries[member.name + "#data"] = layer_tar.extractfile(member).read()
    return entries


def tags(engine: Engine) -> str:
    return engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()


METADATA_DOCKERFILE = """\
FROM busybox
ARG VERSION=1.0
ENV APP_VERSION=$VERSION GREETING="hello world"
ENV APP_VERSION=2 PREVIOUS=$APP_VERSION
LABEL org.example.name=demo version=${VERSION}
WORKDIR /app
COPY a.txt .
COPY conf /etc/demo/
EXPOSE 8080 53/udp
USER nobody
STOPSIGNAL SIGTERM
VOLUME /data
ENTRYPOINT ["/bin/cat"]
CMD ["/app/a.txt"]
"""


def test_build_steps_config_and_full_cache(engine: Engine, busybox: str,
                                           tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": METADATA_DOCKERFILE, "a.txt": "hello\n", "conf/app.conf": "x=1\n"})
    first = build(engine, context, "-t", "meta:1", "-t", "meta:2").stdout.decode()
    assert "Step 1/14 : FROM busybox\n" in first
    assert "Step 7/14 : COPY a.txt .\n" in first
    assert "Successfully tagged meta:1\n" in first and "Successfully tagged meta:2\n" in first
    built = first.split("Successfully built ")[1][:12]
    data = inspect(engine, "meta:1")
    assert data["Id"].removeprefix("sha256:").startswith(built)
    config = data["Config"]
    assert "GREETING=hello world" in config["Env"]
    assert "APP_VERSION=2" in config["Env"] and "PREVIOUS=1.0" in config["Env"]
    assert config["Labels"] == {"org.example.name": "demo", "version": "1.0"}
    assert config["WorkingDir"] == "/app"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert config["User"] == "nobody" and config["StopSignal"] == "SIGTERM"
    assert set(config["Volumes"]) == {"/data"}
    assert config["Entrypoint"] == ["/bin/cat"] and config["Cmd"] == ["/app/a.txt"]

    again = build(engine, context, "-t", "meta:1").stdout.decode()
    assert again.count(" ---> Using cache") == 13
    assert "Running in" not in again
    assert f"Successfully built {built}" in again


def test_changed_file_rebuilds_from_its_copy(engine: Engine, busybox: str,
                                             tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nENV A=1\nCOPY one.txt /one.txt\nENV B=2\n"
                      "COPY two.txt /two.txt\nLABEL done=yes\n",
        "one.txt": "one\n", "two.txt": "two\n"})
    build(engine, context, "-t", "partial")
    (context / "two.txt").write_text("changed\n")
    out = build(engine, context, "-t", "partial").stdout.decode()
    steps = out.split("Step ")[1:]
    assert [" ---> Using cache" in s for s in steps] == [False, True, True, True, False, False]
    assert top_layer(engine, "partial")["two.txt#data"] == b"changed\n"
    nocache = build(engine, context, "--no-cache", "-t", "partial").stdout.decode()
    assert "Using cache" not in nocache



def test_directories_steps_make_have_the_build_time(engine: Engine, busybox: str,
                                                    tmp_path: Path) -> None:
    """As dockerd 20.10: the directories WORKDIR and COPY make (the
    destination's missing parents, a directory source's destination) get
    the time the step ran, copied ones keep theirs; a rebuild with
    nothing changed still takes every step from the cache."""
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nWORKDIR /w1/w2\nCOPY f.txt /x/y/f.txt\n"
                      "COPY src/ /d/e/\n",
        "f.txt": "f\n", "src/sub/s.txt": "s\n"})
    os.utime(context / "src" / "sub", (1000, 1000))
    before = int(time.time())
    build(engine, context, "-t", "made-dirs")
    after = time.time()
    made = {**top_layer(engine, "made-dirs", index=-3), **top_layer(engine, "made-dirs", -2),
            **top_layer(engine, "made-dirs")}
    for name in ("w1", "w1/w2", "x", "x/y", "d", "d/e"):
        assert before <= made[name].mtime <= after, name
    assert made["d/e/sub"].mtime == 1000, "a copied directory keeps its mtime"
    again = build(engine, context, "-t", "made-dirs").stdout.decode()
    assert again.count(" ---> Using cache") == 3


def test_copy_semantics(engine: Engine, busybox: str, tmp_path: Path) -> None:
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        info = tarfile.TarInfo("inner/file.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"inner"))
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n"
                      "COPY --chown=33:33 --chmod=600 src/ /dest/\n",
        "src/a.txt": "a", "src/sub/b.txt": "b"})
    build(engine, context, "-t", "copy1")
    layer = top_layer(engine, "copy1")
    assert layer["dest/a.txt"].uid == 33 and layer["dest/a.txt"].gid == 33
    assert layer["dest/a.txt"].mode & 0o7777 == 0o600
    assert layer["dest/sub/b.txt#data"] == b"b"

    write_context(context, {
        "Dockerfile": "FROM busybox\nADD --chown=www-data payload.tgz /opt/\n"
                      "COPY *.txt /texts/\n",
        "payload.tgz": payload.getvalue(), "x.txt": "x", "y.txt": "y"})
    build(engine, context, "-t", "copy2")
    layer = top_layer(engine, "copy2")
    assert set(n for n in layer if not n.endswith("#data")) >= {"texts/x.txt", "texts/y.txt"}
    quiet = build(engine, context, "-q").stdout.decode()
    assert quiet.strip() == inspect(engine, "copy2")["Id"]
    add_layer = top_layer(engine, "copy2", index=-2)
    assert add_layer["opt/inner/file.txt#data"] == b"inner"
    assert add_layer["opt/inner/file.txt"].uid == 33


def test_multi_stage_copy_from(engine: Engine, busybox: str, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox AS first\nCOPY made.txt /out/made.txt\n"
                      "FROM scratch AS unused\nCOPY made.txt /never\n"
                      "FROM busybox\nCOPY --from=first /out/made.txt /final.txt\n"
                      "COPY --from=0 /out /out0\n",
        "made.txt": "stage one\n"})
    out = build(engine, context, "-t", "multi").stdout.decode()
    assert "Step 3/7 : FROM scratch AS unused" in out
    assert top_layer(engine, "multi")["out0/made.txt#data"] == b"stage one\n"
    assert top_layer(engine, "multi", index=-2)["final.txt#data"] == b"stage one\n"
    targeted = build(engine, context, "--target", "first", "-t", "first-only").stdout.decode()
    assert "Step 2/2 : COPY made.txt /out/made.txt" in targeted
    missing = build(engine, context, "--target", "nope", check=False)
    assert b"failed to reach build target nope in Dockerfile" in missing.stderr


IMAGE_FILES_DOCKERFILE = """\
FROM busybox AS first
RUN mkdir -p /out/sub && echo one > /out/a.txt && echo two > /out/b.txt \
 && echo deep > /out/sub/c.txt && ln -s a.txt /out/link && ln -s /out /shortcut
FROM busybox
WORKDIR /shortcut-free
COPY --from=first /out/*.txt /texts/
COPY --from=first /out/link /shortcut/sub /picked/
COPY --chown=www-data:mail mine.txt /home
"""


def test_image_files_are_read_only_where_a_step_needs_them(engine: Engine, busybox: str,
                                                           tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {"Dockerfile": IMAGE_FILES_DOCKERFILE,
                                               "mine.txt": "mine\n"})
    build(engine, context, "-t", "picked")
    texts = top_layer(engine, "picked", index=-3)
    assert (texts["texts/a.txt#data"], texts["texts/b.txt#data"]) == (b"one\n", b"two\n")
    picked = top_layer(engine, "picked", index=-2)
    assert picked["picked/link#data"] == b"one\n", "a source symlink is followed in the image"
    assert picked["picked/c.txt#data"] == b"deep\n", "through a symlinked directory"
    mine = top_layer(engine, "picked")
    assert "home/mine.txt" in mine, "/home is a directory in busybox"
    assert (mine["home/mine.txt"].uid, mine["home/mine.txt"].gid) == (33, 12)
    assert engine.docker("ps", "-aq").stdout.strip() == b"", "no view container is left"

    since = f"{time.time():.6f}"
    again = build(engine, context, "-t", "picked").stdout.decode()
    assert again.count(" ---> Using cache") == 5
    events = engine.docker("events", "--since", since, "--until", str(time.time() + 1),
                           "--filter", "type=container", "--format", "{{.Action}}")
    assert events.stdout.decode().split() == [], "a cached build reads no image"


VOLUME_DOCKERFILE = """\
FROM busybox AS a
RUN mkdir -p /data && echo base > /data/base
VOLUME /data
RUN echo run > /data/run && echo changed > /data/base && mkdir /data/rundir
COPY f.txt /data/copied
ADD f.txt /data/added
WORKDIR /data/wd
COPY f.txt /data/wd
FROM busybox
COPY --from=a /data/ /out/
COPY --from=a /data/copied /single
"""


def test_volume_paths_as_the_classic_builder_has_them(engine: Engine, busybox: str,
                                                      tmp_path: Path) -> None:
    """As dockerd 20.10: after VOLUME, what a RUN changes below it is lost
    (its container has the volume there), while COPY, ADD and WORKDIR write
    into the image; reading the image (COPY --from, whether a destination is
    a directory) sees the image's own content there."""
    context = write_context(tmp_path / "ctx", {"Dockerfile": VOLUME_DOCKERFILE,
                                               "f.txt": "copied\n"})
    build(engine, context, "-t", "volumes")
    script = "cd /out && find . | sort && cat base wd/f.txt /single"
    out = engine.docker("run", "--rm", "volumes", "sh", "-c", script).stdout.decode()
    assert out.split("\n") == [".", "./added", "./base", "./copied", "./wd", "./wd/f.txt",
                               "base", "copied", "copied", ""]


def test_chown_names_under_a_volume_come_from_the_image(engine: Engine, busybox: str,
                                                        tmp_path: Path) -> None:
    """/etc a VOLUME, /etc/passwd and /etc/group written by a COPY after it:
    --chown's names are looked up in that content, as dockerd 20.10 does."""
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nVOLUME /etc\nCOPY passwd group /etc/\n"
                      "COPY --chown=app:app f.txt /owned\n",
        "f.txt": "owned\n", "passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/:/bin/sh\n",
        "group": "root:x:0:\napp:x:1234:\n"})
    build(engine, context, "-t", "volume-chown")
    owned = top_layer(engine, "volume-chown")["owned"]
    assert (owned.uid, owned.gid) == (1234, 1234)



CHOWN_USER_ONLY_DOCKERFILE = """\
FROM busybox
RUN echo 'app:x:1000:1000::/:/bin/sh' >> /etc/passwd && echo 'app:x:2000:' >> /etc/group \
 && echo 'solo:x:1001:1001::/:/bin/sh' >> /etc/passwd
COPY --chown=app f.txt /owned
"""


@pytest.mark.parametrize(("chown", "message"), [
    ("solo", "can't find gid for group solo: no such group: solo"),
    ("app:", "can't find gid for group : no such group: \n"),
    ("app:app:app", "invalid chown string format: app:app:app"),
])
def test_chown_user_alone_names_the_group_too(engine: Engine, busybox: str, tmp_path: Path,
                                              chown: str, message: str) -> None:
    """As dockerd 20.10: --chown=NAME looks NAME up as the group too (not
    the user's primary group) and fails when there is no such group."""
    context = write_context(tmp_path / "ctx", {"Dockerfile": CHOWN_USER_ONLY_DOCKERFILE,
                                               "f.txt": "owned\n"})
    build(engine, context, "-t", "chown-user")
    owned = top_layer(engine, "chown-user")["owned"]
    assert (owned.uid, owned.gid) == (1000, 2000)
    (context / "Dockerfile").write_text(
        CHOWN_USER_ONLY_DOCKERFILE + f"COPY --chown={chown} f.txt /failed\n")
    result = build(engine, context, check=False)
    assert result.returncode != 0
    assert ("unable to convert uid/gid chown string to host mapping: " + message
            in result.stderr.decode())


OWNERS_DOCKERFILE = """\
FROM busybox AS a
RUN mkdir -p /src/sub && touch /src/file /src/sub/deep && ln -s file /src/link \
 && chown 55:55 /src && chown 77:78 /src/file && chown 88:89 /src/sub /src/sub/deep \
 && chown -h 99:98 /src/link && chmod 700 /src/sub
FROM busybox
COPY --from=a /src /dst
COPY --from=a /src/file /src/sub /picked/
COPY --from=a --chown=5:6 /src/file /chowned
"""


def test_copy_from_keeps_the_owners(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """As dockerd 20.10: COPY --from without --chown keeps the copied
    paths' owners; the directories it makes are root's."""
    context = write_context(tmp_path / "ctx", {"Dockerfile": OWNERS_DOCKERFILE})
    build(engine, context, "-t", "owners")
    script = ('stat -c "%n %u:%g %a" /dst /dst/file /dst/link /dst/sub /dst/sub/deep '
              '/picked /picked/deep /picked/file /chowned')
    out = engine.docker("run", "--rm", "owners", "sh", "-c", script).stdout.decode()
    assert out.splitlines() == [
        "/dst 0:0 755", "/dst/file 77:78 644", "/dst/link 99:98 777", "/dst/sub 88:89 700",
        "/dst/sub/deep 88:89 644", "/picked 0:0 755", "/picked/deep 88:89 644",
        "/picked/file 77:78 644", "/chowned 5:6 644"]


def test_sdk_build_with_args_labels_and_dockerignore(engine: Engine, busybox: str,
                                                     tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "build.Dockerfile": "FROM busybox\nARG WHO\nENV WHO=${WHO:-nobody}\n"
                            "COPY . /ctx/\n",
        "keep.txt": "k", "secret.log": "s", "logs/a.log": "a", ".dockerignore": "*.log\nlogs\n"})
    client = engine.client()
    image, logs = client.images.build(path=str(context), dockerfile="build.Dockerfile",
                                      tag="sdk:built", buildargs={"WHO": "me", "UNUSED": "x"},
                                      labels={"via": "sdk"})
    assert "WHO=me" in image.attrs["Config"]["Env"]
    assert image.attrs["Config"]["Labels"] == {"via": "sdk"}
    text = "".join(chunk.get("stream", "") for chunk in logs)
    assert "Step 5/5 : LABEL via=sdk\n" in text
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in text
    names = set(top_layer(engine, "sdk:built"))
    assert "ctx/keep.txt" in names
    assert not any(n.endswith(".log") for n in names)


@pytest.mark.parametrize(("dockerfile", "message"), [
    ("FROM busybox\nRUN true\nFOO bar\n",
     "Dockerfile parse error line 3: unknown instruction: FOO"),
    ("FROM busybox\nCOPY\n", "Dockerfile parse error line 2: COPY requires at least two"),
    ("FROM busybox\nCOPY missing.txt /\n",
     "COPY failed: file not found in build context or excluded by .dockerignore: "
     "stat missing.txt: file does not exist"),
    ("FROM busybox\nCOPY ignored.txt /\n",
     "COPY failed: file not found in build context or excluded by .dockerignore: "
     "stat ignored.txt: file does not exist"),
    ("FROM busybox\nCOPY ../outside /\n",
     "COPY failed: forbidden path outside the build context: ../outside ()"),
    ("FROM 127.0.0.1:1/missing/image\nRUN true\n",
     "http://127.0.0.1:1/v2/missing/image/manifests/latest"),
    ("FROM busybox\nCOPY --from=127.0.0.1:1/nope / /\n",
     "invalid from flag value 127.0.0.1:1/nope: "),
    ("FROM busybox\nADD http://127.0.0.1:1/file /\n", "ADD failed: source http://127.0.0.1:1/file"),
    ("ARG ONLY=1\n", "No image was generated. Is your Dockerfile empty?"),
    ("FROM busybox\nENV A=\"open\n",
     'failed to process "\\"open": unexpected end of statement while looking for matching '
     "double-quote"),
])
def test_bad_builds_tag_nothing(engine: Engine, busybox: str, tmp_path: Path,
                                dockerfile: str, message: str) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": dockerfile, "ignored.txt": "x", ".dockerignore": "ignored.txt\n"})
    result = build(engine, context, "-t", "broken", check=False)
    assert result.returncode != 0
    assert message in result.stderr.decode()
    assert "broken:" not in tags(engine)
    assert engine.docker("ps", "-aq").stdout.strip() == b""


def test_context_with_parent_entries_is_refused(engine: Engine, busybox: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM busybox\nCOPY . /\n"), ("../evil", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client = engine.client()
    with pytest.raises(docker.errors.APIError) as info:
        list(client.api.build(fileobj=buf, custom_context=True, tag="evil"))
    assert "is outside of" in str(info.value)
    assert "evil:" not in tags(engine)


def test_dockerfile_from_stdin(engine: Engine, busybox: str) -> None:
    out = engine.docker("build", "-t", "stdin:1", "-", input=b"FROM busybox\nENV X=1\n")
    assert b"Successfully tagged stdin:1" in out.stdout
    assert "X=1" in inspect(engine, "stdin:1")["Config"]["Env"]


RUN_DOCKERFILE = """\
FROM busybox
ARG WHO=builder
RUN echo "made by $WHO" > /made.txt && echo to-stderr >&2
COPY input.txt /input.txt
RUN cat /input.txt >> /made.txt
CMD ["cat", "/made.txt"]
"""


def test_run_steps_cache_and_result(engine: Engine, busybox: str, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {"Dockerfile": RUN_DOCKERFILE,
                                               "input.txt": "input one\n"})
    out = build(engine, context, "--build-arg", "WHO=tests", "-t", "ran").stdout.decode()
    assert out.count(" ---> Running in ") == 2
    assert "\x1b[91mto-stderr\n\x1b[0m" in out
    assert out.count("Removing intermediate container ") == 2
    made = top_layer(engine, "ran")["made.txt#data"]
    assert made == b"made by tests\ninput one\n"
    assert engine.docker("run", "--rm", "ran").stdout == made
    data = inspect(engine, "ran")
    assert not any(e.startswith("WHO=") for e in data["Config"]["Env"])
    assert data["Config"]["Cmd"] == ["cat", "/made.txt"]
    history = engine.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                            "ran").stdout.decode()
    assert '|1 WHO=tests /bin/sh -c echo "made by $WHO" > /made.txt' in history
    again = build(engine, context, "--build-arg", "WHO=tests", "-t", "ran").stdout.decode()
    assert "Running in" not in again and again.count(" ---> Using cache") == 5
    (context / "input.txt").write_text("input two\n")
    changed = build(engine, context, "--build-arg", "WHO=tests", "-t", "ran").stdout.decode()
    assert changed.count(" ---> Using cache") == 2 and changed.count("Running in") == 1
    other_arg = build(engine, context, "--build-arg", "WHO=else", "-t", "ran").stdout.decode()
    assert other_arg.count(" ---> Using cache") == 1
    assert engine.docker("ps", "-aq").stdout.strip() == b""


def test_failing_run_reports_and_cleans_up(engine: Engine, busybox: str,
                                           tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN exit 3\n"})
    result = build(engine, context, "-t", "fails", check=False)
    assert result.returncode == 1
    assert "The command '/bin/sh -c exit 3' returned a non-zero code: 3" in \
        result.stderr.decode()
    assert "fails:" not in tags(engine)
    assert engine.docker("ps", "-aq").stdout.strip() == b""
    kept = build(engine, context, "--rm=false", check=False)
    assert kept.returncode == 1
    left = engine.docker("ps", "-aq").stdout.split()
    assert len(left) == 1
    engine.docker("rm", "-f", left[0].decode())


def test_onbuild_triggers_run_in_children(engine: Engine, busybox: str,
                                          tmp_path: Path) -> None:
    parent = write_context(tmp_path / "parent", {
        "Dockerfile": "FROM busybox\nONBUILD COPY marker.txt /marker.txt\n"
                      "ONBUILD ENV FROM_TRIGGER=yes\n"})
    build(engine, parent, "-t", "onbuild-parent")
    assert inspect(engine, "onbuild-parent")["Config"]["OnBuild"] == [
        "COPY marker.txt /marker.txt", "ENV FROM_TRIGGER=yes"]
    child = write_context(tmp_path / "child", {
        "Dockerfile": "FROM onbuild-parent\nLABEL child=1\n", "marker.txt": "m"})
    out = build(engine, child, "-t", "onbuild-child").stdout.decode()
    assert "# Executing 2 build triggers\n" in out
    data = inspect(engine, "onbuild-child")
    assert "FROM_TRIGGER=yes" in data["Config"]["Env"]
    assert not data["Config"]["OnBuild"]
    assert top_layer(engine, "onbuild-child")["marker.txt#data"] == b"m"


def ctl(engine: Engine, *args: str) -> str:
    out = subprocess.run([*BERTH, "ctl", "--exec-root", str(engine.exec_root), "build", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def build_service_status(engine: Engine) -> dict:
    out = subprocess.run([*BERTH, "status", "--exec-root", str(engine.exec_root), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    return {row["service"]: row for row in json.loads(out.stdout)}["build"]


def service_metrics(engine: Engine) -> dict:
    url = build_service_status(engine)["metrics_url"]
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_ctl_cache_usage_prune_and_metrics(engine: Engine, busybox: str,
                                           tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY big.bin /big.bin\nENV DONE=1\n",
        "big.bin": b"z" * 100_000})
    out = ctl(engine, str(context), "-t", "ctl-built")
    assert "Successfully tagged ctl-built:latest" in out
    assert "Using cache" in ctl(engine, str(context), "-t", "ctl-built")
    usage = json.loads(ctl(engine, "du", "--json"))
    copies = [int(r.get("size", 0)) for r in usage if "COPY" in r["description"]]
    assert copies and max(copies) >= 100_000
    families = service_metrics(engine)
    assert families["berth_build_cache_hits"].samples[0].value >= 2
    assert families["berth_build_builds"].samples[0].value >= 2
    assert "berth_build_step_seconds" in families

    engine.docker("builder", "prune", "-f")
    assert json.loads(ctl(engine, "du", "--json")), "a tag keeps its cache without --all"
    pruned = engine.docker("builder", "prune", "-a", "-f").stdout.decode()
    assert "Total reclaimed space" in pruned
    assert json.loads(ctl(engine, "du", "--json")) == []
    assert "ctl-built:latest" in tags(engine)
    engine.docker("rmi", "ctl-built")
    rebuilt = ctl(engine, str(context))
    assert "Using cache" not in rebuilt


def test_dockerfile_outside_context_or_ignored(engine: Engine, busybox: str,
                                               tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY . /ctx/\n", "kept.txt": "k",
        ".dockerignore": "Dockerfile\n.dockerignore\n"})
    build(engine, context, "-t", "ignored-df")
    assert {n for n in top_layer(engine, "ignored-df") if n.startswith("ctx/")} == {
        "ctx/kept.txt", "ctx/kept.txt#data"}
    outside = write_context(tmp_path / "elsewhere", {
        "Custom.Dockerfile": "FROM busybox\nCOPY kept.txt /kept.txt\nENV FROM_OUTSIDE=1\n"})
    build(engine, context, "-f", str(outside / "Custom.Dockerfile"), "-t", "outside-df")
    assert "FROM_OUTSIDE=1" in inspect(engine, "outside-df")["Config"]["Env"]


def test_run_options_reach_the_step_container(engine: Engine, busybox: str,
                                              tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN grep myhost /etc/hosts; ls /sys/class/net; "
                      "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                      "/sys/fs/cgroup/cpu/cpu.shares\n"})
    out = build(engine, context, "--network", "none", "--add-host", "myhost:10.1.2.3",
                "--memory", "64m", "--cpu-shares", "512").stdout.decode()
    assert "10.1.2.3\tmyhost\nlo\n67108864\n512\n" in out


def test_missing_base_is_pulled_and_pull_forces(engine: Engine, busybox: str, registry,
                                                tmp_path: Path) -> None:
    remote = f"{registry.address}/build/base:1"
    engine.docker("tag", busybox, remote)
    engine.docker("push", remote)
    engine.docker("rmi", remote)
    context = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {remote}\nENV P=1\n"})
    out = build(engine, context, "-t", "pulled").stdout.decode()
    assert f"Step 1/2 : FROM {remote}\n" in out
    assert "Successfully tagged pulled:latest" in out
    assert remote in tags(engine)
    forced = build(engine, context, "--pull", "-t", "pulled").stdout.decode()
    assert "Step 2/2 : ENV P=1\n ---> Using cache" in forced


def test_run_with_build_args_keeps_deletions(engine: Engine, busybox: str,
                                             tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nARG TOKEN=secret\n"
                      "RUN rm /etc/group && mkdir /made && echo $TOKEN > /made/token\n"})
    build(engine, context, "-t", "deleted")
    assert "TOKEN=secret" not in "".join(inspect(engine, "deleted")["Config"]["Env"])
    layer = top_layer(engine, "deleted")
    assert "etc/.wh.group" in layer and layer["made/token#data"] == b"secret\n"
    listed = engine.docker("run", "--rm", "deleted", "ls", "/etc").stdout.decode().split()
    assert "group" not in listed and "passwd" in listed


def all_image_ids(engine: Engine) -> set[str]:
    return set(engine.docker("images", "-aq", "--no-trunc").stdout.decode().split())


def test_run_step_commits_one_image_with_the_step_config(engine: Engine, busybox: str,
                                                         tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nMAINTAINER builder\nARG X\nRUN echo $X > /x\n"})
    before = all_image_ids(engine)
    since = str(time.time() - 1)
    build(engine, context, "--build-arg", "X=1", "-t", "stepped")
    data = inspect(engine, "stepped")
    assert not any(e.startswith("X=") for e in data["Config"]["Env"])
    assert data["Config"]["Cmd"] == ["sh"] and data["Author"] == "builder"
    lines = engine.docker("history", "--no-trunc", "--format", "{{.ID}} {{.CreatedBy}}",
                          "stepped").stdout.decode().splitlines()
    assert lines[0] == f"{data['Id']} |1 X=1 /bin/sh -c echo $X > /x"
    steps = {line.split()[0] for line in lines[:3]}
    assert all_image_ids(engine) - before == steps
    events = engine.docker("events", "--since", since, "--until", str(time.time() + 1),
                           "--format", "{{.Type}} {{.Action}}").stdout.decode().splitlines()
    assert "container destroy" in events and "container commit" not in events


MISC_DOCKERFILE = """\
# escape=`
FROM busybox
SHELL ["/bin/sh", "-ec"]
RUN echo one `
    two > /joined.txt
RUN ["/bin/sh", "-c", "echo exec > /exec.txt"]
ENV OLD form value
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost || exit 1
EXPOSE 7000-7001/udp
VOLUME ["/v1", "/v2"]
LABEL "spaced key"="a b" other=c
USER 1000:1000
"""


def test_shell_escape_healthcheck_and_exec_form(engine: Engine, busybox: str,
                                                tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {"Dockerfile": MISC_DOCKERFILE})
    build(engine, context, "-t", "misc")
    config = inspect(engine, "misc")["Config"]
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert "OLD=form value" in config["Env"]
    assert config["Healthcheck"]["Test"] == ["CMD-SHELL", "wget -q localhost || exit 1"]
    assert config["Healthcheck"]["Interval"] == 5_000_000_000
    assert config["Healthcheck"]["Retries"] == 2
    assert set(config["ExposedPorts"]) == {"7000/udp", "7001/udp"}
    assert set(config["Volumes"]) == {"/v1", "/v2"}
    assert config["Labels"] == {"spaced key": "a b", "other": "c"}
    out = engine.docker("run", "--rm", "--user", "0", "misc", "cat", "/joined.txt",
                        "/exec.txt").stdout
    assert out == b"one two\nexec\n"


def start_sleeping_build(engine: Engine, context: Path) -> subprocess.Popen:
    """A docker build whose RUN step is running (and sleeping) on return;
    the WORKDIR before (one of its own: not from the cache) made the build
    read the image (a view container)."""
    write_context(context, {"Dockerfile": f"FROM busybox\nWORKDIR /{context.parent.name}\n"
                                          "RUN echo started && sleep 60\n"})
    client = subprocess.Popen([DOCKER_CLI, "build", "-t", "abandoned", str(context)],
                              env=engine.env(), stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    for line in client.stdout:
        if line.startswith("started"):
            break
    assert engine.docker("ps", "-q").stdout.strip()
    return client


def wait_for_no_containers(engine: Engine) -> None:
    deadline = time.monotonic() + 30
    while engine.docker("ps", "-aq").stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engine.docker("ps", "-aq").stdout.strip() == b""
    assert container_mounts(engine) == []


def container_mounts(engine: Engine) -> list[str]:
    """The engine's container file systems mounted now."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return [m for m in mounts if m.startswith(str(engine.data_root / "container"))]


def view_stays_mounted(engine: Engine) -> None:
    """The build's view container (created, never started) keeps its file
    system mounted while the build goes on: its reads mount nothing more."""
    views = engine.docker("ps", "-q", "--no-trunc", "--filter", "status=created"
                          ).stdout.decode().split()
    assert len(views) == 1
    merged = json.loads(engine.docker("inspect", views[0]).stdout)[0]["GraphDriver"]["Data"]
    assert os.path.ismount(merged["MergedDir"])


def test_client_going_away_stops_the_build(engine: Engine, busybox: str,
                                           tmp_path: Path) -> None:
    client = start_sleeping_build(engine, tmp_path / "ctx")
    view_stays_mounted(engine)
    client.kill()
    client.wait()
    wait_for_no_containers(engine)
    assert "abandoned:" not in tags(engine)


def test_restarted_build_service_removes_what_a_crash_left(engine: Engine, busybox: str,
                                                           tmp_path: Path) -> None:
    client = start_sleeping_build(engine, tmp_path / "ctx")
    try:
        view_stays_mounted(engine)
        os.kill(build_service_status(engine)["pid"], signal.SIGKILL)
    finally:
        client.kill()
        client.wait()
    wait_for_no_containers(engine)
    assert "Successfully built" in build(engine, write_context(tmp_path / "after", {
        "Dockerfile": "FROM busybox\nRUN true\n"})).stdout.decode()


def test_a_failing_copy_from_leaves_no_mount(engine: Engine, busybox: str,
                                             tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox AS a\nFROM busybox\nCOPY --from=a /etc/passwd /p\n"
                      "COPY --from=a /missing /m\n"})
    failed = build(engine, context, check=False)
    assert failed.returncode != 0
    wait_for_no_containers(engine)


def test_private_base_image_uses_registry_config(engine: Engine, busybox_tar: Path,
                                                 tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", "builder", "pw"], check=True,
                          capture_output=True, text=True).stdout.strip()
    htpasswd.write_text(line + "\n")
    with running_registry(htpasswd=htpasswd) as registry:
        name = f"{registry.address}/private/base:1"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                        "--dest-creds", "builder:pw", f"docker-archive:{busybox_tar}",
                        f"docker://{name}"], check=True, capture_output=True, timeout=120)
        context = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {name}\nENV P=1\n"})
        denied = build(engine, context, check=False)
        assert denied.returncode != 0 and "unauthorized" in denied.stderr.decode().lower()
        engine.docker("login", "-u", "builder", "--password-stdin", registry.address,
                      input=b"pw\n")
        try:
            out = build(engine, context, "-t", "from-private").stdout.decode()
        finally:
            engine.docker("logout", registry.address)
        assert "Successfully tagged from-private:latest" in out


def test_meta_args_gzip_context_and_remote_refused(engine: Engine, busybox: str,
                                                   tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "ARG BASE=nothing\nARG TAG=latest\nFROM ${BASE}:$TAG\nARG TAG\n"
                      "ENV USED_TAG=$TAG\n"})
    client = engine.client()
    image, logs = client.images.build(path=str(context), gzip=True, tag="meta-args",
                                      buildargs={"BASE": "busybox"})
    assert "USED_TAG=latest" in image.attrs["Config"]["Env"]
    text = "".join(chunk.get("stream", "") for chunk in logs)
    assert "Step 3/5 : FROM ${BASE}:$TAG\n" in text
    with pytest.raises(docker.errors.APIError) as info:
        list(client.api.build(path="https://example.invalid/repo.git"))
    assert info.value.status_code == 400


def test_squash_is_refused_as_without_experimental_mode(engine: Engine, busybox: str,
                                                        tmp_path: Path) -> None:
    """dockerd 20.10 without --experimental: 400 and nothing built."""
    context = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN true\n"})
    with pytest.raises(docker.errors.APIError,
                       match="squash is only supported with experimental mode") as info:
        list(engine.client().api.build(path=str(context), tag="squashed", squash=True))
    assert info.value.status_code == 400
    assert engine.docker("images", "-q", "squashed").stdout == b""


def test_cache_from_uses_a_loaded_images_history(engine: Engine, busybox: str,
                                                 tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nENV A=1\nRUN echo built > /made\nCOPY one.txt /one.txt\n"
                      "RUN echo second >> /made\nCMD [\"cat\", \"/made\"]\n",
        "one.txt": "one\n"})
    build(engine, context, "-t", "cached:src")
    source_id = inspect(engine, "cached:src")["Id"]
    archive = tmp_path / "src.tar"
    engine.docker("save", "-o", str(archive), "cached:src")
    engine.docker("rmi", "cached:src")
    engine.docker("builder", "prune", "-a", "-f")
    engine.docker("load", "-i", str(archive))   # as CI restores it: no parents, no cache

    plain = build(engine, context, "-t", "cached:plain").stdout.decode()
    assert "Using cache" not in plain
    engine.docker("rmi", "cached:plain")
    engine.docker("builder", "prune", "-a", "-f")

    out = build(engine, context, "--cache-from", "cached:src", "-t", "cached:again")
    text_out = out.stdout.decode()
    assert text_out.count(" ---> Using cache") == 5 and "Running in" not in text_out
    assert inspect(engine, "cached:again")["Id"] == source_id
    assert engine.docker("run", "--rm", "cached:again").stdout == b"built\nsecond\n"

    (context / "one.txt").write_text("changed\n")
    partial = build(engine, context, "--cache-from", "cached:src", "--cache-from", "gone:1",
                    "-t", "cached:partial").stdout.decode()
    steps = partial.split("Step ")[1:]
    assert [" ---> Using cache" in s for s in steps] == [False, True, True, False, False, False]
    made = engine.docker("run", "--rm", "cached:partial", "cat", "/one.txt", "/made").stdout
    assert made == b"changed\nbuilt\nsecond\n"
