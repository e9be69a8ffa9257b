"""Dockerfile parsing: the `dockerfile` package's AST (Docker's own parser)
checked and grouped into stages the way Docker's instructions.Parse does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dockerfile

from services.common import godur
from services.common.errors import InvalidArgument

_ESCAPE_DIRECTIVE = re.compile(r"^#\s*escape\s*=\s*(\S)\s*$", re.IGNORECASE)
_DIRECTIVE = re.compile(r"^#\s*[a-zA-Z][a-zA-Z0-9]*\s*=")

# Flags each instruction accepts (name -> takes a value).
_FLAGS: dict[str, dict[str, bool]] = {
    "FROM": {"platform": True},
    "COPY": {"from": True, "chown": True, "chmod": True},
    "ADD": {"chown": True, "chmod": True},
    "HEALTHCHECK": {"interval": True, "timeout": True, "start-period": True,
                    "start-interval": True, "retries": True},
}
KNOWN_INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
                      "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
                      "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
_AT_LEAST_ONE = {"ENV", "LABEL", "EXPOSE", "VOLUME", "HEALTHCHECK", "MAINTAINER",
                 "RUN", "ENTRYPOINT", "CMD"}
_EXACTLY_ONE = {"WORKDIR", "USER", "STOPSIGNAL"}


@dataclass
class Instruction:
    name: str                      # upper case: RUN, COPY, ...
    args: list[str]                # as written (quotes and $refs kept, except JSON form)
    flags: dict[str, str]
    json: bool
    original: str
    line: int
    trigger: str = ""              # ONBUILD: the trigger's instruction name

    def __str__(self) -> str:
        return self.original


@dataclass
class Stage:
    base: str                      # base image as written (may use meta ARGs)
    name: str                      # AS name, lower case; "" when unnamed
    platform: str
    original: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    escape: str
    meta_args: list[Instruction]   # ARGs before the first FROM
    stages: list[Stage]


class ParseError(InvalidArgument):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"Dockerfile parse error line {line}: {message}")


def escape_token(text: str) -> str:
    """The `# escape=` parser directive, when the file starts with one."""
    for line in text.splitlines():
        match = _ESCAPE_DIRECTIVE.match(line.strip())
        if match:
            return match.group(1)
        if not _DIRECTIVE.match(line.strip()):
            break
    return "\\"


def parse(text: str, name: str = "Dockerfile") -> Dockerfile:
    commands = _parse_ast(text, name)
    result = Dockerfile(escape=escape_token(text), meta_args=[], stages=[])
    for command in commands:
        instruction = _check(command)
        if instruction.name == "FROM":
            result.stages.append(_stage(instruction))
        elif not result.stages:
            if instruction.name != "ARG":
                raise ParseError(instruction.line, "no build stage in current context")
            result.meta_args.append(instruction)
        else:
            result.stages[-1].instructions.append(instruction)
    return result


def _parse_ast(text: str, name: str) -> tuple[dockerfile.Command, ...]:
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        message = str(exc)
        if message == "file with no instructions":
            raise InvalidArgument(f"the Dockerfile ({name}) cannot be empty") from exc
        raise ParseError(_failing_line(text), message) from exc
    if not commands:
        raise InvalidArgument(f"the Dockerfile ({name}) cannot be empty")
    return commands


def _failing_line(text: str) -> int:
    """The package's errors carry no line: the first prefix that fails has it."""
    lines = text.splitlines()
    for end in range(1, len(lines) + 1):
        try:
            dockerfile.parse_string("\n".join(lines[:end]) + "\n")
        except dockerfile.GoParseError as exc:
            if str(exc) != "file with no instructions":
                return end
    return len(lines)


def _flags(command: dockerfile.Command, name: str) -> dict[str, str]:
    allowed = _FLAGS.get(name, {})
    flags: dict[str, str] = {}
    for raw in command.flags:
        key, sep, value = raw.removeprefix("--").partition("=")
        if key not in allowed:
            raise ParseError(command.start_line, f"Unknown flag: {key}")
        if allowed[key] and not sep:
            raise ParseError(command.start_line, f"Missing a value on flag: {raw}")
        flags[key] = value
    return flags


def _check(command: dockerfile.Command) -> Instruction:
    name = command.cmd.upper()
    line = command.start_line
    if name not in KNOWN_INSTRUCTIONS:
        raise ParseError(line, f"unknown instruction: {name}")
    instruction = Instruction(name=name, args=list(command.value), flags=_flags(command, name),
                              json=command.json, original=command.original, line=line)
    if command.heredocs:
        raise ParseError(line, "heredocs are not supported by the legacy builder")
    if name == "ONBUILD":
        _check_trigger(command, instruction)
        return instruction
    if name == "HEALTHCHECK":
        for flag in ("interval", "timeout", "start-period", "start-interval"):
            try:
                duration_ns(instruction.flags.get(flag, ""))
            except InvalidArgument as exc:
                raise ParseError(line, exc.message) from exc
    args = [a for a in instruction.args if a != ""]
    if name in _AT_LEAST_ONE and not args and not (name in ("CMD", "ENTRYPOINT", "RUN")
                                                   and command.json):
        raise ParseError(line, f"{name} requires at least one argument")
    if name in _EXACTLY_ONE and len(args) != 1:
        raise ParseError(line, f"{name} requires exactly one argument")
    if name in ("COPY", "ADD") and len(args) < 2:
        raise ParseError(line, f"{name} requires at least two arguments")
    if name == "ARG" and len(args) != 1:
        raise ParseError(line, "ARG requires exactly one argument")
    if name == "SHELL" and not (command.json and args):
        raise ParseError(line, "SHELL requires the arguments to be in JSON form")
    if name == "FROM" and len(args) not in (1, 3):
        raise ParseError(line, "FROM requires either one or three arguments")
    if name == "FROM" and len(args) == 3 and args[1].upper() != "AS":
        raise ParseError(line, "FROM requires either one or three arguments")
    return instruction


def _check_trigger(command: dockerfile.Command, instruction: Instruction) -> None:
    trigger = (command.sub_cmd or "").upper()
    if not trigger:
        raise ParseError(instruction.line, "ONBUILD requires at least one argument")
    if trigger == "ONBUILD":
        raise ParseError(instruction.line, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("FROM", "MAINTAINER"):
        raise ParseError(instruction.line, f"{trigger} isn't allowed as an ONBUILD trigger")
    instruction.trigger = trigger
    instruction.args = [re.sub(r"^\s*ONBUILD\s+", "", command.original, flags=re.IGNORECASE)]


def _stage(instruction: Instruction) -> Stage:
    args = instruction.args
    name = args[2].lower() if len(args) == 3 else ""
    if name and not re.fullmatch(r"[a-z][a-z0-9-_.]*", name):
        raise ParseError(instruction.line,
                         f"invalid name for build stage: {args[2]!r}, name can't start "
                         "with a number or contain symbols")
    return Stage(base=args[0], name=name, platform=instruction.flags.get("platform", ""),
                 original=instruction.original, line=instruction.line)


def duration_ns(text: str) -> int:
    """A HEALTHCHECK flag's Go duration in nanoseconds; unset is zero."""
    return godur.parse_ns(text or "0")


def parse_trigger(text: str) -> Instruction:
    """One ONBUILD trigger (stored in an image) as an instruction."""
    commands = dockerfile.parse_string(text + "\n")
    return _check(commands[0])
