"""GetContainerEvents: the container service's events of CRI containers, as
kubelet's evented PLEG reads them (created, started, stopped, deleted, each
with the pod's and the container's status when they still exist)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from berth.types.v1 import types_pb2
from k8s.runtime.v1 import api_pb2
from services.common.errors import NotFound
from services.cri import labels
from services.cri.containers import Containers
from services.cri.peers import Peers
from services.cri.sandboxes import Sandboxes

_TYPES = {"create": api_pb2.CONTAINER_CREATED_EVENT, "start": api_pb2.CONTAINER_STARTED_EVENT,
          "die": api_pb2.CONTAINER_STOPPED_EVENT, "destroy": api_pb2.CONTAINER_DELETED_EVENT}


class ContainerEvents:
    def __init__(self, peers: Peers, sandboxes: Sandboxes, containers: Containers) -> None:
        self._peers = peers
        self._sandboxes = sandboxes
        self._containers = containers

    async def follow(self) -> AsyncIterator[api_pb2.ContainerEventResponse]:
        request = types_pb2.SubscribeRequest(filters=types_pb2.Filters(filters={
            "type": types_pb2.StringList(values=["container"]),
            "event": types_pb2.StringList(values=list(_TYPES)),
            "label": types_pb2.StringList(values=[f"{labels.TYPE}={labels.CONTAINER}"])}))
        async for event in self._peers.containers.Subscribe(request):
            yield await self._response(event)

    async def _response(self, event: types_pb2.Event) -> api_pb2.ContainerEventResponse:
        response = api_pb2.ContainerEventResponse(
            container_id=event.actor_id, container_event_type=_TYPES[event.action],
            created_at=event.time_nano)
        sandbox = self._sandboxes.find(event.attributes.get(labels.SANDBOX_ID, ""))
        if sandbox is not None:
            response.pod_sandbox_status.CopyFrom(await self._sandboxes.status(sandbox))
        if event.action != "destroy":
            try:
                response.containers_statuses.append(
                    await self._containers.status(event.actor_id))
            except NotFound:
                pass
        return response
