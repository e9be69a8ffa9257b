"""Dockerfile parsing, word expansion, .dockerignore, the cache key and step helpers."""

from __future__ import annotations

import pytest

from berth.types.v1 import types_pb2
from services.builder import instructions
from services.builder.dockerignore import Ignore, read_patterns
from services.builder.handlers import HANDLERS, _expose_ports, go_quote_list
from services.builder.options import BuildOptions
from services.builder.steps import _literal
from services.builder.store import cache_key
from services.builder.words import process_word, process_words
from services.common.errors import InvalidArgument

ENV = {"name": "world", "empty": "", "path": "/usr/bin"}


@pytest.mark.parametrize(("text", "expected"), [
    ("hello", "hello"),
    ("$name", "world"),
    ("${name}", "world"),
    ("a${name}b", "aworldb"),
    ("${missing:-fallback}", "fallback"),
    ("${empty:-fallback}", "fallback"),
    ("${empty-fallback}", ""),
    ("${missing-fallback}", "fallback"),
    ("${name:+alt}", "alt"),
    ("${empty:+alt}", ""),
    ("${empty+alt}", "alt"),
    ("${missing:+alt}", ""),
    ("${missing:-$name}", "world"),
    ("'$name'", "$name"),
    ('"$name x"', "world x"),
    ('"a\\"b"', 'a"b'),
    ("\\$name", "$name"),
    ('"\\n"', "\\n"),
    ("$", "$"),
    ("$missing", ""),
    ("${path}:/bin", "/usr/bin:/bin"),
])
def test_process_word(text: str, expected: str) -> None:
    assert process_word(text, ENV) == expected


def test_process_word_with_backtick_escape() -> None:
    assert process_word("`$name", ENV, escape="`") == "$name"
    assert process_word("C:\\dir", ENV, escape="`") == "C:\\dir"


def test_required_variable() -> None:
    assert process_word("${name:?oops}", ENV) == "world"
    with pytest.raises(InvalidArgument, match="missing: oops"):
        process_word("${missing:?oops}", ENV)


@pytest.mark.parametrize("text", ["'open", '"open', "${name", "${name:%x}"])
def test_bad_words(text: str) -> None:
    with pytest.raises(InvalidArgument):
        process_word(text, ENV)


def test_process_words_splits_unquoted_space() -> None:
    assert process_words("80 $ports '8 9'", {"ports": "443 53/udp"}) == [
        "80", "443", "53/udp", "8 9"]


DOCKERFILE = """\
# escape=\\
ARG BASE=busybox
FROM ${BASE} AS first
ENV A=1 B="2 3"
RUN echo hi \\
    there
COPY --chown=1:2 --chmod=644 a b /dest/
FROM first
COPY --from=first /x /y
ONBUILD RUN echo trigger
"""


def test_parse_stages_and_meta_args() -> None:
    parsed = instructions.parse(DOCKERFILE)
    assert [a.original for a in parsed.meta_args] == ["ARG BASE=busybox"]
    assert [s.name for s in parsed.stages] == ["first", ""]
    first, second = parsed.stages
    assert first.base == "${BASE}"
    assert [i.name for i in first.instructions] == ["ENV", "RUN", "COPY"]
    copy = first.instructions[2]
    assert copy.flags == {"chown": "1:2", "chmod": "644"}
    assert copy.args == ["a", "b", "/dest/"]
    assert second.instructions[0].flags == {"from": "first"}
    assert second.instructions[1].trigger == "RUN"
    assert second.instructions[1].args == ["RUN echo trigger"]


@pytest.mark.parametrize(("text", "message"), [
    ("FROM busybox\nRUN x\nFOO bar\n",
     "Dockerfile parse error line 3: unknown instruction: FOO"),
    ("FROM busybox\nCOPY a\n", "Dockerfile parse error line 2: COPY requires at least two"),
    ("FROM busybox\nRUN --mount=type=cache echo\n",
     "Dockerfile parse error line 2: Unknown flag: mount"),
    ("FROM busybox\nWORKDIR\n", "Dockerfile parse error line 2: WORKDIR requires exactly one"),
    ("FROM busybox\nONBUILD ONBUILD RUN x\n", "Dockerfile parse error line 2: Chaining ONBUILD"),
    ("RUN echo\n", "Dockerfile parse error line 1: no build stage in current context"),
    ("FROM a b\n", "Dockerfile parse error line 1: FROM requires either one or three arguments"),
    ("FROM busybox\nENV A\n", "Dockerfile parse error line 2: ENV must have two arguments"),
    ("", "the Dockerfile (Dockerfile) cannot be empty"),
    ("# only a comment\n", "the Dockerfile (Dockerfile) cannot be empty"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        instructions.parse(text)
    assert info.value.message.startswith(message)


def test_escape_directive() -> None:
    assert instructions.escape_token("# escape=`\nFROM x\n") == "`"
    assert instructions.escape_token("FROM x\n# escape=`\n") == "\\"


def test_dockerignore_rules() -> None:
    ignore = Ignore(read_patterns("# comment\n\n*.log\n**/tmp\nsecret/\n!secret/keep\n"))
    assert ignore.excluded("a.log")
    assert not ignore.excluded("dir/a.log")
    assert ignore.excluded("x/y/tmp")
    assert ignore.excluded("tmp")
    assert ignore.excluded("secret/other")
    assert not ignore.excluded("secret/keep")
    assert not ignore.excluded("main.py")
    assert not Ignore([]).excluded("anything")
    assert not ignore.excluded(".dockerignore")
    assert Ignore([".dockerignore", "Dockerfile"]).names(".dockerignore")
    assert not Ignore(["*", "!Dockerfile"]).names("Dockerfile")


def test_cache_key_depends_on_parent_and_step() -> None:
    step = {"cmd": ["/bin/sh", "-c", "echo"], "extra": ""}
    assert cache_key("sha256:a", step) == cache_key("sha256:a", dict(step))
    assert cache_key("sha256:a", step) != cache_key("sha256:b", step)
    assert cache_key("sha256:a", step) != cache_key("sha256:a", {**step, "extra": "x"})


def test_step_helpers() -> None:
    assert _expose_ports("80") == ["80/tcp"]
    assert _expose_ports("53/udp") == ["53/udp"]
    assert _expose_ports("8000-8002") == ["8000/tcp", "8001/tcp", "8002/tcp"]
    with pytest.raises(InvalidArgument, match="Invalid containerPort: abc"):
        _expose_ports("abc")
    for text in ("plain", "it's $HOME", "a\\b", 'q"uote'):
        assert process_word(_literal(text), {"HOME": "/root"}) == text
    assert go_quote_list(["/bin/sh", "-c", 'echo "hi"']) == '["/bin/sh" "-c" "echo \\"hi\\""]'
    hub, local = types_pb2.RegistryAuth(username="hub"), types_pb2.RegistryAuth(username="l")
    options = BuildOptions(auth_configs={"https://index.docker.io/v1/": hub,
                                         "localhost:5000": local})
    assert options.auth_for("busybox") is hub
    assert options.auth_for("library/busybox:1") is hub
    assert options.auth_for("localhost:5000/app") is local
    assert options.auth_for("quay.io/x/y") is None


def test_every_instruction_but_from_has_a_handler() -> None:
    assert set(HANDLERS) == instructions.KNOWN_INSTRUCTIONS - {"FROM"}
