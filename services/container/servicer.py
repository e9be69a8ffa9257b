"""gRPC servicer of the container service: decode, call the domain, encode.

Lifecycle, IO and logs are here; the RPCs for processes in a running
container (exec, top, stats, update) are in servicer_processes.py and those
for its files (cp, diff, export, commit) in servicer_files.py, mixed in below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from berth.container.v1 import container_pb2, container_pb2_grpc
from services.common.events import EventBus
from services.container import views
from services.container.commit import Commits
from services.container.containers import Manager
from services.container.files import Files
from services.container.host import CGROUP_DRIVER, STORAGE_DRIVER, HostFacts
from services.container.networking import connect_network, disconnect_network, remove_link
from services.container.processes import Processes
from services.container.resources import Resources
from services.container.servicer_files import FilesServicerMixin
from services.container.servicer_processes import ProcessServicerMixin
from services.container.sessions import Sessions

_STREAMS = {"stdout": container_pb2.IOFrame.STDOUT, "stderr": container_pb2.IOFrame.STDERR}


class ContainerServicer(ProcessServicerMixin, FilesServicerMixin,
                        container_pb2_grpc.ContainerServiceServicer):
    def __init__(self, events: EventBus, manager: Manager, sessions: Sessions,
                 processes: Processes, resources: Resources, files: Files,
                 commits: Commits, host_facts: Callable[[], HostFacts]) -> None:
        self._events = events
        self._manager = manager
        self._sessions = sessions
        self._processes = processes
        self._resources = resources
        self._files = files
        self._commits = commits
        self._host_facts = host_facts

    async def Create(self, request, context):  # noqa: N802
        cid, warnings = await self._manager.create(request)
        return container_pb2.CreateContainerResponse(id=cid, warnings=warnings)

    async def Start(self, request, context):  # noqa: N802
        already = await self._manager.start(request.id)
        return container_pb2.StartContainerResponse(already_running=already)

    async def Stop(self, request, context):  # noqa: N802
        timeout = request.timeout if request.HasField("timeout") else None
        stopped = await self._manager.stop(request.id, request.signal, timeout)
        return container_pb2.StopContainerResponse(already_stopped=stopped)

    async def Restart(self, request, context):  # noqa: N802
        timeout = request.timeout if request.HasField("timeout") else None
        await self._manager.restart(request.id, request.signal, timeout)
        return container_pb2.RestartContainerResponse()

    async def Kill(self, request, context):  # noqa: N802
        await self._manager.kill(request.id, request.signal)
        return container_pb2.KillContainerResponse()

    async def Pause(self, request, context):  # noqa: N802
        await self._manager.pause(request.id)
        return container_pb2.PauseContainerResponse()

    async def Unpause(self, request, context):  # noqa: N802
        await self._manager.unpause(request.id)
        return container_pb2.UnpauseContainerResponse()

    async def Wait(self, request, context):  # noqa: N802
        async for result in self._manager.wait(request.id, request.condition):
            if result is None:
                yield container_pb2.WaitContainerResponse(registered=True)
            else:
                yield container_pb2.WaitContainerResponse(status_code=result[0],
                                                          error=result[1])

    async def Rename(self, request, context):  # noqa: N802
        await self._manager.rename(request.id, request.name)
        return container_pb2.RenameContainerResponse()

    async def Remove(self, request, context):  # noqa: N802
        await self._manager.remove(request.id, request.force, request.remove_volumes)
        return container_pb2.RemoveContainerResponse()

    async def RemoveLink(self, request, context):  # noqa: N802
        remove_link(self._manager, request.name)
        return container_pb2.RemoveLinkResponse()

    async def List(self, request, context):  # noqa: N802
        containers = await views.list_containers(self._manager, request)
        return container_pb2.ListContainersResponse(containers=containers)

    async def Inspect(self, request, context):  # noqa: N802
        inspect = await views.inspect(self._manager, request.id, request.size)
        inspect.exec_ids.extend(self._processes.exec_ids(inspect.id))
        return inspect

    async def Prune(self, request, context):  # noqa: N802
        keep = views.prune_filter(request.filters)
        deleted, reclaimed = await self._manager.prune(keep)
        return container_pb2.PruneContainersResponse(deleted=deleted,
                                                     space_reclaimed=reclaimed)

    async def ConnectNetwork(self, request, context):  # noqa: N802
        await connect_network(self._manager, request.id, request.endpoint)
        return container_pb2.ConnectNetworkResponse()

    async def DisconnectNetwork(self, request, context):  # noqa: N802
        await disconnect_network(self._manager, request.id, request.network, request.force)
        return container_pb2.DisconnectNetworkResponse()

    async def Attach(self, request_iterator, context):  # noqa: N802
        async for frame in self._sessions.attach(request_iterator):
            yield frame

    async def Resize(self, request, context):  # noqa: N802
        await self._sessions.resize(request.id, request.height, request.width)
        return container_pb2.ResizeResponse()

    async def ReopenLog(self, request, context):  # noqa: N802
        await self._manager.reopen_log(request.id)
        return container_pb2.ReopenLogResponse()

    async def Logs(self, request, context):  # noqa: N802
        attrs = self._sessions.log_attributes(request.id) if request.details else {}
        async for line in self._sessions.logs(request):
            yield container_pb2.LogEntry(stream=_STREAMS[line.stream], data=line.data,
                                         time_nano=line.time_nano, attrs=attrs)

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event

    async def Info(self, request, context):  # noqa: N802
        facts = await asyncio.to_thread(self._host_facts)
        return container_pb2.HostInfo(
            id=facts.id, name=facts.name, kernel_version=facts.kernel_version,
            operating_system=facts.operating_system, os_version=facts.os_version,
            architecture=facts.architecture, ncpu=facts.ncpu, mem_total=facts.mem_total,
            cgroup_driver=CGROUP_DRIVER, cgroup_version=facts.cgroup_version,
            storage_driver=STORAGE_DRIVER,
            driver_status=[container_pb2.DriverStatus(key=k, value=v)
                           for k, v in facts.driver_status],
            security_options=facts.security_options,
            runtimes={name: container_pb2.Runtime(path=path)
                      for name, path in facts.runtimes.items()},
            default_runtime=facts.default_runtime, root_dir=facts.root_dir,
            components=[container_pb2.HostComponent(name=name, version=version)
                        for name, version in facts.components.items()],
            live_restore=facts.live_restore, labels=facts.labels, debug=facts.debug,
            insecure_registries=facts.insecure_registries,
            registry_mirrors=facts.registry_mirrors)
