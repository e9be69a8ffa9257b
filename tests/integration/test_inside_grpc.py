"""The inside-container RPCs through the container service's typed gRPC API
(no Docker JSON): exec with stdin and exit code, path stat, archive out and
in, changes, top, one stats sample, update, and their errors."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

import grpc
import pytest

from berth.container.v1 import container_pb2 as pb
from berth.container.v1 import container_pb2_grpc
from berth.types.v1 import types_pb2
from tests.support.engine import Engine


@pytest.fixture(scope="module")
def stub(engine: Engine, busybox: str) -> Iterator[container_pb2_grpc.ContainerServiceStub]:
    channel = grpc.insecure_channel(f"unix://{engine.exec_root}/container.sock")
    yield container_pb2_grpc.ContainerServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def cid(stub: container_pb2_grpc.ContainerServiceStub) -> Iterator[str]:
    created = stub.Create(pb.CreateContainerRequest(
        name="grpc-inside", host_config=pb.HostConfig(network_mode="none"),
        config=pb.ContainerConfig(image="busybox",
                                  cmd=types_pb2.StringList(values=["sleep", "1000"]))))
    stub.Start(pb.StartContainerRequest(id=created.id))
    yield created.id
    stub.Remove(pb.RemoveContainerRequest(id=created.id, force=True))


def exec_run(stub, cid: str, cmd: list[str], stdin: bytes = b"") -> tuple[bytes, int]:
    exec_id = stub.ExecCreate(pb.ExecCreateRequest(container_id=cid, config=pb.ExecConfig(
        cmd=cmd, attach_stdin=bool(stdin), attach_stdout=True, attach_stderr=True))).id

    def requests() -> Iterator[pb.ExecStartRequest]:
        yield pb.ExecStartRequest(options=pb.ExecStartOptions(exec_id=exec_id))
        if stdin:
            yield pb.ExecStartRequest(stdin=stdin)
            yield pb.ExecStartRequest(close_stdin=True)

    output, code = b"", None
    for frame in stub.ExecStart(requests()):
        output += frame.data
        if frame.HasField("exit_code"):
            code = frame.exit_code
    return output, code


def test_exec_over_grpc(stub, cid: str) -> None:
    assert exec_run(stub, cid, ["sh", "-c", "cat; exit 5"], stdin=b"typed API\n") == (
        b"typed API\n", 5)
    with pytest.raises(grpc.RpcError) as missing:
        stub.ExecInspect(pb.ExecInspectRequest(exec_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_archive_over_grpc(stub, cid: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("grpc.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))

    def put() -> Iterator[pb.PutArchiveRequest]:
        yield pb.PutArchiveRequest(options=pb.PutArchiveOptions(id=cid, path="/tmp"))
        yield pb.PutArchiveRequest(data=buffer.getvalue())

    stub.PutArchive(put())
    stat = stub.StatPath(pb.PathRequest(id=cid, path="/tmp/grpc.txt"))
    assert (stat.name, stat.size) == ("grpc.txt", 5)
    chunks = list(stub.GetArchive(pb.PathRequest(id=cid, path="/tmp/grpc.txt")))
    assert chunks[0].stat.name == "grpc.txt"
    with tarfile.open(fileobj=io.BytesIO(b"".join(c.data for c in chunks))) as tar:
        assert tar.extractfile("grpc.txt").read() == b"hello"
    changes = stub.Changes(pb.ContainerRef(id=cid)).changes
    assert pb.Change(path="/tmp/grpc.txt", kind=1) in changes
    with pytest.raises(grpc.RpcError) as missing:
        stub.StatPath(pb.PathRequest(id=cid, path="/nowhere"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_top_stats_and_update_over_grpc(stub, cid: str) -> None:
    top = stub.Top(pb.TopRequest(id=cid, ps_args="-o pid,comm"))
    assert list(top.titles) == ["PID", "COMMAND"]
    assert any(row.values[1] == "sleep" for row in top.processes)
    sample = next(iter(stub.Stats(pb.StatsRequest(id=cid, one_shot=True))))
    assert sample.id == cid and sample.pids_current >= 1
    stub.Update(pb.UpdateContainerRequest(id=cid, resources=pb.Resources(pids_limit=33)))
    assert stub.Inspect(pb.InspectContainerRequest(id=cid)).host_config.resources.pids_limit == 33
    with pytest.raises(grpc.RpcError) as bad:
        stub.Update(pb.UpdateContainerRequest(id=cid, resources=pb.Resources(memory=1024)))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
