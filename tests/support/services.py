"""One engine service seen from a test: its PID, and a kill -9 that
`berth up`'s supervisor answers by starting it again."""

from __future__ import annotations

import os
import signal

import grpc

from berth.types.v1 import types_pb2, types_pb2_grpc
from tests.support.engine import Engine
from tests.support.polling import wait_for


def service_pid(engine: Engine, service: str) -> int | None:
    """The PID the service reports over its socket; None while it is away."""
    channel = grpc.insecure_channel(f"unix://{engine.exec_root}/{service}.sock")
    try:
        return types_pb2_grpc.InfoStub(channel).GetServiceInfo(
            types_pb2.GetServiceInfoRequest(), timeout=2).pid
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def kill_service(engine: Engine, service: str) -> None:
    """SIGKILL one service by its PID and wait until it is back."""
    old = service_pid(engine, service)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: service_pid(engine, service) not in (None, old), timeout=60,
             message=f"the {service} service to be back")
