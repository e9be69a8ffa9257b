"""docker top: the host's `ps` with the user's arguments, keeping the rows
of processes in the container's cgroup (Docker's parsing of ps output)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.common.errors import Internal, InvalidArgument


@dataclass
class ProcessTable:
    titles: list[str]
    processes: list[list[str]] = field(default_factory=list)


def parse_ps_output(output: str, pids: set[int]) -> ProcessTable:
    lines = output.split("\n")
    table = ProcessTable(titles=lines[0].split())
    pid_index = -1
    for index, title in enumerate(table.titles):
        if title == "PID":
            pid_index = index
        elif title == "LWP":     # ps showing threads
            pid_index = index
            break
    if pid_index == -1:
        raise Internal("Couldn't find PID field in ps output")
    last_was_ours = False
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if fields[pid_index] == "-":    # a thread line of the process above
            if last_was_ours:
                table.processes.append(_row(table.titles, fields))
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError as exc:
            raise Internal(f"Unexpected pid '{fields[pid_index]}': {exc}") from exc
        last_was_ours = pid in pids
        if last_was_ours:
            table.processes.append(_row(table.titles, fields))
    return table


def _row(titles: list[str], fields: list[str]) -> list[str]:
    """The last column (the command) keeps its spaces."""
    return [*fields[:len(titles) - 1], " ".join(fields[len(titles) - 1:])]


async def _run_ps(args: list[str]) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        "ps", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    return process.returncode or 0, out, err


async def top(pids: set[int], ps_args: str) -> ProcessTable:
    if "\0" in ps_args:
        raise InvalidArgument(f"invalid ps arguments {ps_args!r}: a NUL character")
    args = ps_args.split() if ps_args else ["-ef"]
    if not pids:
        raise InvalidArgument("container has no processes")
    # Restricting ps to the container's PIDs is faster; some options (such
    # as f) cannot be combined with -q, so retry without it.
    code, out, err = await _run_ps([*args, "-q", ",".join(str(p) for p in sorted(pids))])
    if code != 0:
        code, out, err = await _run_ps(args)
    if code != 0:
        first_line = err.decode(errors="replace").strip().split("\n")[0]
        # ps refusing the client's arguments is their error, not the engine's.
        error = InvalidArgument if ps_args else Internal
        raise error(f"ps: {first_line or f'exit status {code}'}")
    return parse_ps_output(out.decode(errors="replace"), pids)
