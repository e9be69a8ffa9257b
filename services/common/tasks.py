"""Background asyncio tasks that nobody awaits.

The event loop keeps only a weak reference to a task, so one started and
not awaited may be collected mid-run; its owner holds it in a set instead.
"""

from __future__ import annotations

import asyncio


def keep_task(tasks: set[asyncio.Task], task: asyncio.Task) -> None:
    """Hold a reference to a background task until it is done."""
    tasks.add(task)
    task.add_done_callback(tasks.discard)
