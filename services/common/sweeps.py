"""Keeping peers swept: a service that owns a list (the container service its
containers, the cri service its pods) pushes it to each peer that holds state
for its members, and the peer drops what the list does not name.

A sweep runs once the peer's channel is ready, again whenever the connection
comes back after it dropped (the peer restarted and may have missed
releases), and whenever the owner asks (`sweep_soon`, after a release the
peer missed); a sweep that fails is retried with back-off until it succeeds.
docs/design.md "Reconcile after a crash".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc

from services.common.errors import BerthError, Unimplemented

log = logging.getLogger(__name__)

_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 30

# A peer's sweep: given the time before which what the peer holds counts
# (what is taken later is kept), what it dropped.
Sweep = Callable[[int], Awaitable[list[str]]]


class PeerSweeps:
    """One task per peer keeps that peer swept over its own channel, whose
    connectivity tells when the peer came back (make it with
    `channel(..., own_connection=True)`, so no other call shares it)."""

    def __init__(self, owner: str, channels: dict[str, grpc.aio.Channel],
                 sweeps: dict[str, Sweep]) -> None:
        self._owner = owner
        self._channels = channels
        self._sweeps = sweeps
        self._wanted = {peer: asyncio.Event() for peer in sweeps}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep_swept(peer)) for peer in self._sweeps]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def sweep_soon(self, peer: str) -> None:
        """A release to `peer` failed: sweep it again as soon as it answers."""
        self._wanted[peer].set()

    async def _keep_swept(self, peer: str) -> None:
        retry_in = _RETRY_FIRST_SECONDS
        while True:
            self._wanted[peer].clear()
            await _until_ready(self._channels[peer])
            try:
                gone = await self._sweeps[peer](time.time_ns())
            except Unimplemented as error:
                log.warning("%s: the %s service cannot reconcile: %s",
                            self._owner, peer, error.message)
                return
            except BerthError as error:
                log.warning("%s: reconcile with the %s service failed (%s); retrying in %.1fs",
                            self._owner, peer, error.message, retry_in)
                await asyncio.sleep(retry_in)
                retry_in = min(retry_in * 2, _RETRY_MAX_SECONDS)
                continue
            retry_in = _RETRY_FIRST_SECONDS
            if gone:
                log.info("%s: the %s service dropped what %d gone members held",
                         self._owner, peer, len(gone))
            await self._until_needed(peer)

    async def _until_needed(self, peer: str) -> None:
        """Until the connection to `peer` drops (it is swept once back) or a
        release to it fails."""
        waits = [asyncio.create_task(_until_not_ready(self._channels[peer])),
                 asyncio.create_task(self._wanted[peer].wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


async def _until_ready(peer_channel: grpc.aio.Channel) -> None:
    state = peer_channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        await peer_channel.wait_for_state_change(state)
        state = peer_channel.get_state(try_to_connect=True)


async def _until_not_ready(peer_channel: grpc.aio.Channel) -> None:
    state = peer_channel.get_state()
    while state == grpc.ChannelConnectivity.READY:
        await peer_channel.wait_for_state_change(state)
        state = peer_channel.get_state()
