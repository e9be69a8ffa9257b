"""One line of Docker's progress stream, as the domain produces it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Message:
    status: str = ""
    id: str = ""
    current: int = 0
    total: int = 0
    aux: dict[str, Any] | None = None
    stream: str = ""  # free text line (`Loaded image: x`)


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
