"""The streamed lists of the CRI (StreamPodSandboxes, StreamContainers,
StreamImages and the stats and metrics streams, KEP-5825): the items a List
call answers, sent as messages of at most CHUNK items each, every item once;
an empty list is a stream without messages (each message holds at least one
item), and the stream ends when all are sent."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# A fixed count, as kubelet's authors asked of runtimes (no per-message size
# computation): 100 containers with kubelet's labels and annotations stay far
# below gRPC's 4 MiB default message limit.
CHUNK = 100


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
