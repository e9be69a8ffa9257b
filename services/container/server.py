"""Wiring of the container service: build the domain objects, register the servicer."""

from __future__ import annotations

import asyncio
from functools import partial

from prometheus_client import REGISTRY

from berth.container.v1 import container_pb2, container_pb2_grpc
from services.common.events import EventBus
from services.common.server import ServiceContext
from services.container.bundle import BundleBuilder
from services.container.cgroups import cgroups_path
from services.container.commit import Commits
from services.container.container_events import ContainerEvents
from services.container.containers import Manager
from services.container.daemon_events import announce_reload
from services.container.files import Files
from services.container.host import host_facts
from services.container.metrics import ContainerCollector
from services.container.peers import Peers
from services.container.processes import Processes
from services.container.reconcile import Reconciler
from services.container.resources import Resources
from services.container.runtime import Runtime
from services.container.servicer import ContainerServicer
from services.container.sessions import Sessions
from services.container.store import ContainerStore


async def setup(ctx: ServiceContext) -> list[str]:
    config = ctx.config
    events = EventBus("container")
    store = ContainerStore(config.service_dir("container") / "state.db")
    runtime = Runtime(config.exec_root / "container", config.engine.get("runtime", "runc"))
    peers = Peers(config)
    bundles = BundleBuilder(peers, config.instance_prefix, bool(config.engine.get("init", False)))
    manager = Manager(config, events, store, runtime, peers, bundles)
    await manager.recover()
    reconciler = Reconciler(ctx.config, manager)
    reconciler.start()
    ctx.on_shutdown.append(reconciler.close)
    prefix = ctx.config.instance_prefix
    REGISTRY.register(ContainerCollector(lambda: [
        (c.id, c.name, c.state.status,
         cgroups_path(prefix, c.id, c.host_config.resources.cgroup_parent))
        for c in list(manager.containers.values())]))
    ctx.counts = manager.counts

    async def stop() -> None:
        await manager.close()
        store.close()
    ctx.on_shutdown.append(stop)
    container_events = ContainerEvents(events, manager)
    processes = Processes(ctx.config, manager, container_events)
    await processes.start()
    ctx.on_shutdown.insert(0, processes.close)
    servicer = ContainerServicer(
        events, manager, Sessions(manager, container_events), processes,
        Resources(ctx.config, manager, container_events), Files(manager, container_events),
        Commits(manager, container_events), partial(host_facts, ctx.config))
    container_pb2_grpc.add_ContainerServiceServicer_to_server(servicer, ctx.server)

    async def reload(engine: dict) -> None:
        announce_reload(events, await asyncio.to_thread(host_facts, config), engine)
    ctx.on_reload.append(reload)
    return [container_pb2.DESCRIPTOR.services_by_name["ContainerService"].full_name]
