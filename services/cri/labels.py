"""Labels on the berth containers of pods, so `docker ps` shows which pod a
container belongs to (as it showed dockershim's) and the cri service finds
them again. kubelet's own CRI labels (io.kubernetes.pod.name, ...) are
copied as they are."""

from __future__ import annotations

from k8s.runtime.v1 import api_pb2

TYPE = "io.kubernetes.cri.type"             # podsandbox or container
SANDBOX_ID = "io.kubernetes.sandbox.id"
CONTAINER_NAME = "io.kubernetes.cri.container-name"
POD_SANDBOX, CONTAINER = "podsandbox", "container"
OWN = (TYPE, SANDBOX_ID, CONTAINER_NAME)


def for_sandbox(sandbox_id: str, config: api_pb2.PodSandboxConfig) -> dict[str, str]:
    return {**config.labels, TYPE: POD_SANDBOX, SANDBOX_ID: sandbox_id}


def for_container(sandbox_id: str, config: api_pb2.ContainerConfig) -> dict[str, str]:
    return {**config.labels, TYPE: CONTAINER, SANDBOX_ID: sandbox_id,
            CONTAINER_NAME: config.metadata.name}
