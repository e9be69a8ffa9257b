"""gRPC servicer of runtime.v1.RuntimeService: decode, call the domain, encode."""

from __future__ import annotations

from k8s.runtime.v1 import api_pb2, api_pb2_grpc
from services.common.errors import NotFound
from services.cri import podmetrics
from services.cri.chunks import chunks
from services.cri.containers import Containers
from services.cri.events import ContainerEvents
from services.cri.sandboxes import Sandboxes
from services.cri.stats import Stats
from services.cri.status import RuntimeInfo
from services.cri.streaming import StreamingServer


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, sandboxes: Sandboxes, containers: Containers, stats: Stats,
                 metrics: podmetrics.PodMetrics, events: ContainerEvents, info: RuntimeInfo,
                 streaming: StreamingServer) -> None:
        self._sandboxes = sandboxes
        self._containers = containers
        self._stats = stats
        self._metrics = metrics
        self._events = events
        self._info = info
        self._streaming = streaming

    async def Version(self, request, context):  # noqa: N802 (gRPC naming)
        return self._info.version()

    async def Status(self, request, context):  # noqa: N802
        return api_pb2.StatusResponse(status=await self._info.status(),
                                      features=self._info.features(),
                                      runtime_handlers=self._info.handlers())

    async def RuntimeConfig(self, request, context):  # noqa: N802
        return api_pb2.RuntimeConfigResponse(linux=api_pb2.LinuxRuntimeConfiguration(
            cgroup_driver=api_pb2.CGROUPFS))

    async def UpdateRuntimeConfig(self, request, context):  # noqa: N802
        return api_pb2.UpdateRuntimeConfigResponse()

    # -- sandboxes -------------------------------------------------------------

    async def RunPodSandbox(self, request, context):  # noqa: N802
        sandbox_id = await self._sandboxes.run(request.config, request.runtime_handler)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def StopPodSandbox(self, request, context):  # noqa: N802
        sandbox = self._sandboxes.find(request.pod_sandbox_id)
        if sandbox is not None:
            async with self._sandboxes.lock(sandbox.id):
                await self._sandboxes.stop(sandbox, self._containers.of_sandbox(sandbox.id))
        return api_pb2.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request, context):  # noqa: N802
        sandbox = self._sandboxes.find(request.pod_sandbox_id)
        if sandbox is not None:
            async with self._sandboxes.lock(sandbox.id):
                members = self._containers.of_sandbox(sandbox.id)
                await self._sandboxes.remove(sandbox, members)
                for cid in members:
                    await self._containers.forget(cid)
        return api_pb2.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request, context):  # noqa: N802
        sandbox = self._sandboxes.get(request.pod_sandbox_id)
        return api_pb2.PodSandboxStatusResponse(
            status=await self._sandboxes.status(sandbox),
            info=self._sandboxes.verbose_info(sandbox) if request.verbose else {})

    async def ListPodSandbox(self, request, context):  # noqa: N802
        wanted = request.filter if request.HasField("filter") else None
        return api_pb2.ListPodSandboxResponse(items=await self._sandboxes.list(wanted))

    async def StreamPodSandboxes(self, request, context):  # noqa: N802
        wanted = request.filter if request.HasField("filter") else None
        for part in chunks(await self._sandboxes.list(wanted)):
            yield api_pb2.StreamPodSandboxesResponse(pod_sandboxes=part)

    async def UpdatePodSandboxResources(self, request, context):  # noqa: N802
        sandbox = self._sandboxes.get(request.pod_sandbox_id)
        self._sandboxes.update_resources(
            sandbox, request.overhead if request.HasField("overhead") else None,
            request.resources if request.HasField("resources") else None)
        return api_pb2.UpdatePodSandboxResourcesResponse()

    # -- containers ------------------------------------------------------------

    async def CreateContainer(self, request, context):  # noqa: N802
        cid = await self._containers.create(request.pod_sandbox_id, request.config)
        return api_pb2.CreateContainerResponse(container_id=cid)

    async def StartContainer(self, request, context):  # noqa: N802
        await self._containers.start(request.container_id)
        return api_pb2.StartContainerResponse()

    async def StopContainer(self, request, context):  # noqa: N802
        await self._containers.stop(request.container_id, request.timeout)
        return api_pb2.StopContainerResponse()

    async def RemoveContainer(self, request, context):  # noqa: N802
        await self._containers.remove(request.container_id)
        return api_pb2.RemoveContainerResponse()

    async def ListContainers(self, request, context):  # noqa: N802
        wanted = request.filter if request.HasField("filter") else None
        return api_pb2.ListContainersResponse(containers=await self._containers.list(wanted))

    async def StreamContainers(self, request, context):  # noqa: N802
        wanted = request.filter if request.HasField("filter") else None
        for part in chunks(await self._containers.list(wanted)):
            yield api_pb2.StreamContainersResponse(containers=part)

    async def ContainerStatus(self, request, context):  # noqa: N802
        status = await self._containers.status(request.container_id)
        return api_pb2.ContainerStatusResponse(
            status=status,
            info=self._containers.verbose_info(status.id) if request.verbose else {})

    async def UpdateContainerResources(self, request, context):  # noqa: N802
        await self._containers.update(request.container_id, request.linux)
        return api_pb2.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, request, context):  # noqa: N802
        await self._containers.reopen_log(request.container_id)
        return api_pb2.ReopenContainerLogResponse()

    async def CheckpointContainer(self, request, context):  # noqa: N802
        self._containers.checkpoint(request.container_id)
        return api_pb2.CheckpointContainerResponse()

    async def ExecSync(self, request, context):  # noqa: N802
        stdout, stderr, code = await self._containers.exec_sync(
            request.container_id, list(request.cmd), request.timeout)
        return api_pb2.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=code)

    async def GetContainerEvents(self, request, context):  # noqa: N802
        async for event in self._events.follow():
            yield event

    # -- stats -----------------------------------------------------------------

    async def ListMetricDescriptors(self, request, context):  # noqa: N802
        return api_pb2.ListMetricDescriptorsResponse(descriptors=podmetrics.descriptors())

    async def ListPodSandboxMetrics(self, request, context):  # noqa: N802
        return api_pb2.ListPodSandboxMetricsResponse(pod_metrics=await self._metrics.list())

    async def StreamPodSandboxMetrics(self, request, context):  # noqa: N802
        for part in chunks(await self._metrics.list()):
            yield api_pb2.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=part)

    async def ContainerStats(self, request, context):  # noqa: N802
        return api_pb2.ContainerStatsResponse(
            stats=await self._stats.container(request.container_id))

    async def ListContainerStats(self, request, context):  # noqa: N802
        wanted = request.filter if request.HasField("filter") else None
        return api_pb2.ListContainerStatsResponse(stats=await self._stats.containers(wanted))

    async def StreamContainerStats(self, request, context):  # noqa: N802
        wanted = request.filter if request.HasField("filter") else None
        for part in chunks(await self._stats.containers(wanted)):
            yield api_pb2.StreamContainerStatsResponse(container_stats=part)

    async def PodSandboxStats(self, request, context):  # noqa: N802
        return api_pb2.PodSandboxStatsResponse(
            stats=await self._stats.pod(request.pod_sandbox_id))

    async def ListPodSandboxStats(self, request, context):  # noqa: N802
        wanted = request.filter if request.HasField("filter") else None
        return api_pb2.ListPodSandboxStatsResponse(stats=await self._stats.pods(wanted))

    async def StreamPodSandboxStats(self, request, context):  # noqa: N802
        wanted = request.filter if request.HasField("filter") else None
        for part in chunks(await self._stats.pods(wanted)):
            yield api_pb2.StreamPodSandboxStatsResponse(pod_sandbox_stats=part)

    # -- streaming (one-time URLs on the streaming server) ---------------------

    async def Exec(self, request, context):  # noqa: N802
        record = self._containers.get(request.container_id)
        url = self._streaming.exec_url(
            record.id, list(request.cmd), request.tty, request.stdin, request.stdout,
            request.stderr)
        return api_pb2.ExecResponse(url=url)

    async def Attach(self, request, context):  # noqa: N802
        record = self._containers.get(request.container_id)
        url = self._streaming.attach_url(
            record.id, request.tty, request.stdin, request.stdout, request.stderr)
        return api_pb2.AttachResponse(url=url)

    async def PortForward(self, request, context):  # noqa: N802
        sandbox = self._sandboxes.get(request.pod_sandbox_id)
        if not (sandbox.host_network or sandbox.netns_path):
            raise NotFound(f"pod sandbox {sandbox.id} has no network namespace")
        url = self._streaming.portforward_url(
            sandbox.id, sandbox.netns_path, list(request.port))
        return api_pb2.PortForwardResponse(url=url)
