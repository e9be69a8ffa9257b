"""Tables by default, JSON on request, for every ctl command."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [list(headers), *rows]:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())


def print_json(messages: Message | Iterable[Message]) -> None:
    if isinstance(messages, Message):
        print(json.dumps(MessageToDict(messages), indent=2))
    else:
        print(json.dumps([MessageToDict(m) for m in messages], indent=2))
