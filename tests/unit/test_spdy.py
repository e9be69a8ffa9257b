"""The hand-written SPDY/3.1 module against frames built byte by byte from
the SPDY/3 specification, and two sessions talking over a memory pipe."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib

import pytest

from services.cri.streaming import spdy

# sha256 of the dictionary bytes in moby/spdystream (spdy/dictionary.go),
# which client-go's SPDY uses.
SPDYSTREAM_DICTIONARY_SHA256 = "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def header_block(pairs: list[tuple[bytes, bytes]]) -> bytes:
    out = struct.pack(">I", len(pairs))
    for name, value in pairs:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


def compress(blocks: list[bytes]) -> list[bytes]:
    """Header blocks as one zlib stream with the dictionary, sync-flushed
    after each (what a SPDY peer sends)."""
    compressor = zlib.compressobj(zdict=spdy.HEADER_DICTIONARY)
    return [compressor.compress(b) + compressor.flush(zlib.Z_SYNC_FLUSH) for b in blocks]


def test_dictionary_is_the_spdy3_one() -> None:
    assert len(spdy.HEADER_DICTIONARY) == 1423
    assert hashlib.sha256(spdy.HEADER_DICTIONARY).hexdigest() == SPDYSTREAM_DICTIONARY_SHA256


def test_decodes_a_syn_stream_built_from_the_spec() -> None:
    block = header_block([(b"streamtype", b"error"), (b"port", b"8080")])
    (compressed,) = compress([block])
    payload = (b"\x00\x00\x00\x05"          # stream ID 5
               b"\x00\x00\x00\x00"          # associated-to 0
               b"\x60\x00"                  # priority 3, slot 0
               + compressed)
    frame = (b"\x80\x03\x00\x01"            # control, version 3, SYN_STREAM
             + bytes([spdy.FLAG_FIN]) + len(payload).to_bytes(3, "big") + payload)
    assert spdy.FrameCodec().feed(frame) == [spdy.SynStream(
        5, {"streamtype": "error", "port": "8080"}, priority=3, fin=True)]


def test_header_blocks_share_one_zlib_stream_per_direction() -> None:
    first, second = compress([header_block([(b"streamtype", b"stdout")]),
                              header_block([(b"streamtype", b"stderr")])])
    frames = b"".join(
        b"\x80\x03\x00\x02\x00" + (4 + len(c)).to_bytes(3, "big") + struct.pack(">I", i) + c
        for i, c in ((1, first), (3, second)))
    codec = spdy.FrameCodec()
    assert codec.feed(frames) == [spdy.SynReply(1, {"streamtype": "stdout"}),
                                  spdy.SynReply(3, {"streamtype": "stderr"})]
    with pytest.raises(spdy.SpdyError):          # the second alone lacks the history
        spdy.FrameCodec().feed(frames[8 + 4 + len(first):])


def test_our_header_blocks_decode_with_plain_zlib() -> None:
    codec = spdy.FrameCodec()
    encoded = [codec.encode(spdy.SynStream(1, {"streamtype": "data", "port": "80"})),
               codec.encode(spdy.HeadersFrame(1, {"x": "y"}, fin=True))]
    assert encoded[0][:4] == b"\x80\x03\x00\x01"
    assert encoded[1][:5] == b"\x80\x03\x00\x08\x01"
    decompressor = zlib.decompressobj(zdict=spdy.HEADER_DICTIONARY)
    assert decompressor.decompress(encoded[0][18:]) == header_block(
        [(b"streamtype", b"data"), (b"port", b"80")])
    assert decompressor.decompress(encoded[1][12:]) == header_block([(b"x", b"y")])


@pytest.mark.parametrize(("wire", "frame"), [
    (b"\x00\x00\x00\x07\x01\x00\x00\x03abc", spdy.DataFrame(7, b"abc", fin=True)),
    (b"\x00\x00\x00\x07\x00\x00\x00\x00", spdy.DataFrame(7, b"")),
    (b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x03\x00\x00\x00\x05",
     spdy.RstStream(3, spdy.CANCEL)),
    (b"\x80\x03\x00\x04\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x07\x00\x01\x00\x00",
     spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 65536})),
    (b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x02", spdy.Ping(2)),
    (b"\x80\x03\x00\x07\x00\x00\x00\x08\x00\x00\x00\x09\x00\x00\x00\x00", spdy.GoAway(9)),
    (b"\x80\x03\x00\x09\x00\x00\x00\x08\x00\x00\x00\x01\x00\x01\x00\x00",
     spdy.WindowUpdate(1, 65536)),
])
def test_frames_both_ways(wire: bytes, frame: spdy.Frame) -> None:
    assert spdy.FrameCodec().feed(wire) == [frame]
    assert spdy.FrameCodec().encode(frame) == wire


def test_frames_split_anywhere() -> None:
    wire = (b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x02"
            b"\x00\x00\x00\x01\x00\x00\x00\x02hi")
    codec = spdy.FrameCodec()
    frames = [f for byte in wire for f in codec.feed(bytes([byte]))]
    assert frames == [spdy.Ping(2), spdy.DataFrame(1, b"hi")]


def test_unknown_control_frames_are_ignored_and_other_versions_refused() -> None:
    assert spdy.FrameCodec().feed(b"\x80\x03\x00\x0a\x00\x00\x00\x02ab") == []
    with pytest.raises(spdy.SpdyError, match="version 2"):
        spdy.FrameCodec().feed(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x02")


class Pipe:
    """Two sessions joined in memory, the way a socket joins them."""

    def __init__(self, **options) -> None:
        self.server = spdy.Session(self._to_client, server=True, **options)
        self.client = spdy.Session(self._to_server, server=False, **options)
        self.sent_to_client: list[spdy.Frame] = []
        self._observer = spdy.FrameCodec()

    async def _to_client(self, data: bytes | memoryview) -> None:
        self.sent_to_client += self._observer.feed(bytes(data))
        self.client.feed(bytes(data))

    async def _to_server(self, data: bytes | memoryview) -> None:
        self.server.feed(bytes(data))

    async def start(self) -> None:
        await self.server.start()
        await self.client.start()


def run(coroutine) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 30))


def test_streams_carry_data_and_half_close() -> None:
    async def scenario() -> None:
        pipe = Pipe()
        await pipe.start()

        async def serve() -> None:
            stream = await pipe.server.accept()
            assert stream.headers == {"streamtype": "stdin"}
            await stream.reply()
            received = await stream.read_all()       # until the client's FIN
            await stream.write(received.upper())
            await stream.close()

        server = asyncio.create_task(serve())
        stream = await pipe.client.open({"streamtype": "stdin"})
        await stream.write(b"hello ")
        await stream.write(b"world")
        await stream.close()
        assert await stream.read_all() == b"HELLO WORLD"
        await server
        assert pipe.client._streams == {} and pipe.server._streams == {}

    run(scenario())


def test_ping_is_answered_and_goaway_ends_the_session() -> None:
    async def scenario() -> None:
        pipe = Pipe()
        await pipe.client._send(spdy.Ping(1))
        await asyncio.sleep(0)
        assert spdy.Ping(1) in pipe.sent_to_client
        await pipe.client.close()
        assert await pipe.server.accept() is None

    run(scenario())


def test_reset_stream_ends_reads_and_writes() -> None:
    async def scenario() -> None:
        pipe = Pipe()
        opening = asyncio.create_task(pipe.client.open({"streamtype": "data"}))
        served = await pipe.server.accept()
        await served.reply()
        stream = await opening
        await served.abort()
        assert await stream.read() == b""
        with pytest.raises(spdy.StreamReset):
            await stream.write(b"x")

    run(scenario())


def test_flow_control_holds_the_writer_until_the_reader_consumes() -> None:
    async def scenario() -> None:
        window = 64 * 1024
        pipe = Pipe(receive_window=window)
        await pipe.start()      # SETTINGS: both peers do flow control
        opening = asyncio.create_task(pipe.client.open({"streamtype": "data"}))
        served = await pipe.server.accept()
        await served.reply()
        stream = await opening
        payload = bytes(range(256)) * 1024      # 256 KiB, four windows
        writer = asyncio.create_task(served.write(payload))
        await asyncio.sleep(0.05)
        assert not writer.done()                # held at the window
        assert sum(len(c) for c in stream._chunks) == window
        received = bytearray()
        while len(received) < len(payload):
            received += await stream.read()
        await writer
        assert bytes(received) == payload

    run(scenario())


def test_a_peer_without_flow_control_is_not_held() -> None:
    """spdystream (client-go) never sends WINDOW_UPDATE nor SETTINGS."""
    async def scenario() -> None:
        pipe = Pipe()
        opening = asyncio.create_task(pipe.client.open({"streamtype": "data"}))
        served = await pipe.server.accept()
        await served.reply()
        stream = await opening
        await served.write(b"x" * (1 << 20))    # far past the default 64 KiB
        await served.close()
        assert len(await stream.read_all()) == 1 << 20

    run(scenario())


# What crictl (client-go, moby/spdystream, Go's compress/zlib) sent to berth's
# streaming server for `crictl exec ID sh -c '...'`: the error, stdout and
# stderr streams, then their resets when it closed the connection.
CAPTURED_CRICTL_EXEC = bytes.fromhex(
    "800300010000002a0000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a5a"
    "54945f04000000ffff800300010000001900000003000000000000c22ac5565c92925f5a02000000ff"
    "ff800300010000001500000005000000000000c229975a5404000000ffff8003000300000008000000"
    "01000000058003000300000008000000030000000580030003000000080000000500000005")


def test_decodes_frames_captured_from_client_go() -> None:
    assert spdy.FrameCodec().feed(CAPTURED_CRICTL_EXEC) == [
        spdy.SynStream(1, {"streamtype": "error"}),
        spdy.SynStream(3, {"streamtype": "stdout"}),
        spdy.SynStream(5, {"streamtype": "stderr"}),
        spdy.RstStream(1, spdy.CANCEL),
        spdy.RstStream(3, spdy.CANCEL),
        spdy.RstStream(5, spdy.CANCEL),
    ]


def test_data_received_before_goaway_stays_readable() -> None:
    async def scenario() -> None:
        pipe = Pipe()
        opening = asyncio.create_task(pipe.client.open({"streamtype": "error"}))
        served = await pipe.server.accept()
        await served.reply()
        stream = await opening
        await served.write(b"status")
        await pipe.server.close()               # GOAWAY right after the data
        assert pipe.client.closed.is_set()
        assert await stream.read_all() == b"status"

    run(scenario())
