"""SPDY/3.1 framing and sessions, as the Kubernetes streaming protocols use them.

Hand-written: no maintained Python SPDY library exists. It covers what
kubectl, crictl and the kubelet speak (client-go's moby/spdystream):
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS,
WINDOW_UPDATE and DATA frames, header blocks compressed with zlib and the
SPDY/3 dictionary (one zlib stream per direction per connection), stream
half-close with FIN, and SPDY/3.1's stream and session flow-control windows.

The frame codec is sans-IO (bytes in, frames out); `Session` runs streams
over any byte pipe given an async `send` callable, so the same code serves
a hijacked HTTP connection and SPDY tunnelled in WebSocket messages.

Flow control: we advertise large receive windows and send WINDOW_UPDATEs as
the application consumes data. spdystream implements neither direction, so
it never sends WINDOW_UPDATE; our send windows are enforced only once the
peer shows it does flow control (a SETTINGS initial window or a
WINDOW_UPDATE), else a Go peer would stall after its first 64 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.common.tasks import keep_task

VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# RST_STREAM status codes.
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION = 1, 2, 3, 4
CANCEL, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_IN_USE = 5, 6, 7, 8
STREAM_ALREADY_CLOSED, FRAME_TOO_LARGE = 9, 11

# GOAWAY status codes.
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2

SETTINGS_MAX_CONCURRENT_STREAMS = 4
SETTINGS_INITIAL_WINDOW_SIZE = 7

DEFAULT_WINDOW = 64 * 1024          # SPDY/3.1: both stream and session windows
MAX_WINDOW = 0x7FFFFFFF
MAX_FRAME_PAYLOAD = 0xFFFFFF        # 24-bit length field
MAX_DATA_FRAME = 1 << 20            # our largest DATA payload

_HEADER_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)
_HEADER_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# The zlib dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00 section 2.6.10.1):
# the length-prefixed words, then the tail of status lines and common values.
HEADER_DICTIONARY = b"".join(
    struct.pack(">I", len(word)) + word.encode() for word in _HEADER_WORDS
) + _HEADER_TAIL.encode()


class SpdyError(Exception):
    """The peer broke the protocol; the session must end."""


Headers = dict[str, str]


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    values: dict[int, int]          # setting ID -> value
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway
         | HeadersFrame | WindowUpdate)


def _encode_header_block(headers: Headers) -> bytes:
    parts = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        raw_name, raw_value = name.lower().encode(), value.encode()
        parts += [struct.pack(">I", len(raw_name)), raw_name,
                  struct.pack(">I", len(raw_value)), raw_value]
    return b"".join(parts)


def _decode_header_block(block: bytes) -> Headers:
    try:
        (count,), offset = struct.unpack_from(">I", block), 4
        headers: Headers = {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", block, offset)
            name = block[offset + 4:offset + 4 + size].decode()
            offset += 4 + size
            (size,) = struct.unpack_from(">I", block, offset)
            value = block[offset + 4:offset + 4 + size].decode()
            offset += 4 + size
            headers[name.lower()] = value
    except (struct.error, UnicodeDecodeError) as exc:
        raise SpdyError(f"malformed header block: {exc}") from exc
    return headers


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise ValueError("SPDY frame payload too large")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type,
                       (flags << 24) | len(payload)) + payload


def data_frame_header(stream_id: int, size: int, fin: bool) -> bytes:
    """The 8 bytes before a DATA frame's payload (kept apart to avoid copies)."""
    return struct.pack(">II", stream_id & MAX_WINDOW,
                       ((FLAG_FIN if fin else 0) << 24) | size)


class FrameCodec:
    """Encodes and decodes the frames of one connection; it holds the two
    zlib streams (ours and the peer's), so every frame of a direction goes
    through the same codec in wire order."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(zdict=HEADER_DICTIONARY)
        self._decompressor = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._buffer = bytearray()

    def _compress(self, headers: Headers) -> bytes:
        block = _encode_header_block(headers)
        return self._compressor.compress(block) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def _decompress(self, data: bytes) -> Headers:
        try:
            block = self._decompressor.decompress(data)
        except zlib.error as exc:
            raise SpdyError(f"cannot decompress header block: {exc}") from exc
        return _decode_header_block(block)

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id, data, fin):
                return data_frame_header(stream_id, len(data), fin) + data
            case SynStream():
                flags = ((FLAG_FIN if frame.fin else 0)
                         | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0))
                payload = struct.pack(">IIBB", frame.stream_id, frame.associated_id,
                                      (frame.priority & 7) << 5, 0)
                return _control(SYN_STREAM, flags, payload + self._compress(frame.headers))
            case SynReply(stream_id, headers, fin):
                return _control(SYN_REPLY, FLAG_FIN if fin else 0,
                                struct.pack(">I", stream_id) + self._compress(headers))
            case HeadersFrame(stream_id, headers, fin):
                return _control(HEADERS, FLAG_FIN if fin else 0,
                                struct.pack(">I", stream_id) + self._compress(headers))
            case RstStream(stream_id, status):
                return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))
            case Settings(values, clear):
                entries = b"".join(struct.pack(">II", key & 0xFFFFFF, value)
                                   for key, value in values.items())
                return _control(SETTINGS, FLAG_SETTINGS_CLEAR if clear else 0,
                                struct.pack(">I", len(values)) + entries)
            case Ping(ping_id):
                return _control(PING, 0, struct.pack(">I", ping_id))
            case GoAway(last_good, status):
                return _control(GOAWAY, 0, struct.pack(">II", last_good, status))
            case WindowUpdate(stream_id, delta):
                return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")

    def feed(self, data: bytes) -> list[Frame]:
        """The complete frames in the bytes received so far."""
        self._buffer += data
        frames: list[Frame] = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= 8:
            first, flags_length = struct.unpack_from(">II", buffer, offset)
            length = flags_length & 0xFFFFFF
            end = offset + 8 + length
            if len(buffer) < end:
                break
            flags = flags_length >> 24
            payload = bytes(buffer[offset + 8:end])
            offset = end
            if first & 0x80000000:
                frame = self._decode_control(first, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(DataFrame(first, payload, bool(flags & FLAG_FIN)))
        del buffer[:offset]
        return frames

    def _decode_control(self, first: int, flags: int, payload: bytes) -> Frame | None:
        version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"unsupported SPDY version {version}")
        fin = bool(flags & FLAG_FIN)
        try:
            return self._decode_control_payload(frame_type, flags, fin, payload)
        except struct.error as exc:
            raise SpdyError(f"short control frame of type {frame_type}") from exc

    def _decode_control_payload(self, frame_type: int, flags: int, fin: bool,
                                payload: bytes) -> Frame | None:
        if frame_type == SYN_STREAM:
            stream_id, associated, priority, _ = struct.unpack_from(">IIBB", payload)
            return SynStream(stream_id & MAX_WINDOW, self._decompress(payload[10:]),
                             associated & MAX_WINDOW, priority >> 5, fin,
                             bool(flags & FLAG_UNIDIRECTIONAL))
        if frame_type in (SYN_REPLY, HEADERS):
            (stream_id,) = struct.unpack_from(">I", payload)
            kind = SynReply if frame_type == SYN_REPLY else HeadersFrame
            return kind(stream_id & MAX_WINDOW, self._decompress(payload[4:]), fin)
        if frame_type == RST_STREAM:
            stream_id, status = struct.unpack_from(">II", payload)
            return RstStream(stream_id & MAX_WINDOW, status)
        if frame_type == SETTINGS:
            (count,) = struct.unpack_from(">I", payload)
            values = {}
            for index in range(count):
                key, value = struct.unpack_from(">II", payload, 4 + 8 * index)
                values[key & 0xFFFFFF] = value
            return Settings(values, bool(flags & FLAG_SETTINGS_CLEAR))
        if frame_type == PING:
            return Ping(struct.unpack_from(">I", payload)[0])
        if frame_type == GOAWAY:
            last_good, status = struct.unpack_from(">II", payload)
            return GoAway(last_good & MAX_WINDOW, status)
        if frame_type == WINDOW_UPDATE:
            stream_id, delta = struct.unpack_from(">II", payload)
            return WindowUpdate(stream_id & MAX_WINDOW, delta & MAX_WINDOW)
        return None     # unknown control frames are ignored (SPDY/3 section 2.2.1)


class StreamReset(ConnectionError):
    """The stream was reset (RST_STREAM) or its session ended."""


@dataclass
class _Window:
    """A send window, and the waiters for it to open."""

    size: int
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, delta: int) -> None:
        self.size += delta
        if self.size > 0:
            self.opened.set()


class Stream:
    """One SPDY stream: read until the peer's FIN, write until ours."""

    def __init__(self, session: Session, stream_id: int, headers: Headers,
                 send_window: int) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self.remote_closed = False      # the peer sent FIN
        self.local_closed = False       # we sent FIN
        self.reset = False
        self.replied = asyncio.Event()
        self.send_window = _Window(send_window)
        self._unacknowledged = 0        # bytes read but not yet granted back

    def __repr__(self) -> str:
        return f"<spdy.Stream {self.id} {self.headers}>"

    async def read(self) -> bytes:
        """The next chunk from the peer; b"" once it half-closed (or reset)."""
        while not self._chunks:
            if self.remote_closed or self.reset:
                self.session._forget_if_done(self)
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        await self.session._consumed(self, len(chunk))
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    async def reply(self, headers: Headers | None = None, fin: bool = False) -> None:
        """Accept the peer's stream (SYN_REPLY)."""
        await self.session._send(SynReply(self.id, headers or {}, fin))
        self.replied.set()
        if fin:
            self._local_fin()

    async def write(self, data: bytes | memoryview) -> None:
        """Send `data` in DATA frames within the flow-control windows."""
        view = memoryview(data)
        while view:
            if self.reset or self.local_closed:
                raise StreamReset(f"stream {self.id} is closed")
            size = await self.session._reserve(self, len(view))
            await self.session._send_data(self.id, view[:size], fin=False)
            view = view[size:]

    async def close(self) -> None:
        """Half-close: send FIN; reading goes on until the peer's FIN."""
        if self.local_closed or self.reset:
            return
        with contextlib.suppress(ConnectionError):
            await self.session._send_data(self.id, b"", fin=True)
        self._local_fin()

    async def abort(self, status: int = CANCEL) -> None:
        """Reset the stream (RST_STREAM) in both directions."""
        if self.reset:
            return
        self._on_reset()
        with contextlib.suppress(ConnectionError):
            await self.session._send(RstStream(self.id, status))

    def _local_fin(self) -> None:
        self.local_closed = True
        self.session._forget_if_done(self)

    def _on_data(self, data: bytes, fin: bool) -> None:
        if data and not self.reset:
            self._chunks.append(data)
        if fin:
            self.remote_closed = True
            self.session._forget_if_done(self)
        self._readable.set()

    def _on_reset(self, discard: bool = True) -> None:
        """The stream ended abnormally: by RST_STREAM (what was received is
        dropped) or with its session (it can still be read)."""
        self.reset = True
        if discard:
            self._chunks.clear()
        self._readable.set()
        self.send_window.opened.set()
        self.session._forget(self)


Send = Callable[[bytes], Awaitable[None]]


class Session:
    """A SPDY/3.1 connection over a byte pipe. Feed it the bytes received
    (`feed`, `feed_eof`); it writes through `send`. A server `accept`s the
    peer's streams, a client `open`s its own."""

    def __init__(self, send: Send, *, server: bool, receive_window: int = 16 << 20,
                 buffer_limit: int = 16 << 20) -> None:
        self._send_bytes = send
        self._codec = FrameCodec()
        self._send_lock = asyncio.Lock()
        self._server = server
        self._next_id = 2 if server else 1
        self._streams: dict[int, Stream] = {}
        self._incoming: asyncio.Queue[Stream | None] = asyncio.Queue()
        self._receive_window = receive_window
        self._session_unacknowledged = 0
        self._peer_initial_window = DEFAULT_WINDOW
        self._session_window = _Window(DEFAULT_WINDOW)
        self._peer_flow_control = False
        self._buffered = 0
        self._buffer_limit = buffer_limit
        self.pause_reading: Callable[[], None] = lambda: None
        self.resume_reading: Callable[[], None] = lambda: None
        self._reading_paused = False
        self._tasks: set[asyncio.Task] = set()
        self.closed = asyncio.Event()
        self.goaway_received = False

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Advertise our windows: streams by SETTINGS, the session by a
        WINDOW_UPDATE of stream 0 (SPDY/3.1 section 2.6.8)."""
        await self._send(Settings({SETTINGS_INITIAL_WINDOW_SIZE: self._receive_window}))
        if self._receive_window > DEFAULT_WINDOW:
            await self._send(WindowUpdate(0, self._receive_window - DEFAULT_WINDOW))

    async def accept(self) -> Stream | None:
        """The peer's next new stream, or None when the session ended."""
        if self.closed.is_set() and self._incoming.empty():
            return None
        return await self._incoming.get()

    async def open(self, headers: Headers, fin: bool = False) -> Stream:
        """Open a stream (SYN_STREAM) and wait for the peer's SYN_REPLY."""
        stream_id = self._next_id
        self._next_id += 2
        stream = Stream(self, stream_id, headers, self._peer_initial_window)
        self._streams[stream_id] = stream
        await self._send(SynStream(stream_id, headers, fin=fin))
        if fin:
            stream._local_fin()
        replied = asyncio.ensure_future(stream.replied.wait())
        ended = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({replied, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            replied.cancel()
            ended.cancel()
        if stream.reset or not stream.replied.is_set():
            raise StreamReset(f"the peer refused stream {stream_id} ({headers})")
        return stream

    async def close(self) -> None:
        """Say GOAWAY and end the session (streams are reset locally)."""
        if not self.closed.is_set():
            with contextlib.suppress(ConnectionError):
                await self._send(GoAway(self._last_peer_stream(), GOAWAY_OK))
        self._end()

    def _end(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for stream in list(self._streams.values()):
            stream._on_reset(discard=False)
        self._session_window.opened.set()
        self._incoming.put_nowait(None)

    def _last_peer_stream(self) -> int:
        ids = [i for i in self._streams if (i % 2 == 1) == self._server]
        return max(ids, default=0)

    # -- receiving ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Handle the bytes received; SpdyError on a protocol violation."""
        for frame in self._codec.feed(data):
            self._handle(frame)

    def feed_eof(self) -> None:
        self._end()

    def _handle(self, frame: Frame) -> None:
        match frame:
            case DataFrame(stream_id, data, fin):
                self._on_data(stream_id, data, fin)
            case SynStream():
                self._on_syn_stream(frame)
            case SynReply(stream_id):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream.replied.set()
                    if frame.fin:
                        stream._on_data(b"", True)
            case HeadersFrame(stream_id, _, fin):
                stream = self._streams.get(stream_id)
                if stream is not None and fin:
                    stream._on_data(b"", True)
            case RstStream(stream_id):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream._on_reset()
            case Settings(values):
                self._on_settings(values)
            case Ping(ping_id):
                if (ping_id % 2 == 1) == self._server:     # the peer's ping: echo it
                    self._spawn(self._send(frame))
            case GoAway():
                self.goaway_received = True
                self._end()
            case WindowUpdate(stream_id, delta):
                self._peer_flow_control = True
                window = (self._session_window if stream_id == 0
                          else getattr(self._streams.get(stream_id), "send_window", None))
                if window is not None:
                    window.add(delta)

    def _on_syn_stream(self, frame: SynStream) -> None:
        if frame.stream_id in self._streams or (frame.stream_id % 2 == 0) != (not self._server):
            self._spawn(self._send(RstStream(frame.stream_id, PROTOCOL_ERROR)))
            return
        stream = Stream(self, frame.stream_id, frame.headers, self._peer_initial_window)
        self._streams[frame.stream_id] = stream
        if frame.fin:
            stream.remote_closed = True
        if frame.unidirectional:
            stream.local_closed = True
        self._incoming.put_nowait(stream)

    def _on_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            # Data for a stream that ended: give its bytes back to the session.
            self._spawn(self._consumed(None, len(data)))
            return
        self._buffered += len(data)
        if self._buffered >= self._buffer_limit and not self._reading_paused:
            self._reading_paused = True
            self.pause_reading()
        stream._on_data(data, fin)

    def _on_settings(self, values: dict[int, int]) -> None:
        window = values.get(SETTINGS_INITIAL_WINDOW_SIZE)
        if window is None:
            return
        self._peer_flow_control = True
        delta = window - self._peer_initial_window
        self._peer_initial_window = window
        for stream in self._streams.values():
            stream.send_window.add(delta)

    async def _consumed(self, stream: Stream | None, size: int) -> None:
        """The application took `size` bytes: grant them back to the peer."""
        if stream is not None:
            self._buffered -= size
            if self._reading_paused and self._buffered <= self._buffer_limit // 2:
                self._reading_paused = False
                self.resume_reading()
        updates = []
        self._session_unacknowledged += size
        if self._session_unacknowledged >= self._receive_window // 2:
            updates.append(WindowUpdate(0, self._session_unacknowledged))
            self._session_unacknowledged = 0
        if stream is not None and not stream.remote_closed:
            stream._unacknowledged += size
            if stream._unacknowledged >= self._receive_window // 2:
                updates.append(WindowUpdate(stream.id, stream._unacknowledged))
                stream._unacknowledged = 0
        for update in updates:
            with contextlib.suppress(ConnectionError):
                await self._send(update)

    # -- sending ------------------------------------------------------------

    async def _reserve(self, stream: Stream, wanted: int) -> int:
        """How much of `wanted` may go out now, waiting for window if the
        peer does flow control."""
        wanted = min(wanted, MAX_DATA_FRAME)
        if not self._peer_flow_control:
            return wanted
        while True:
            if stream.reset or self.closed.is_set():
                raise StreamReset(f"stream {stream.id} is closed")
            size = min(wanted, stream.send_window.size, self._session_window.size)
            if size > 0:
                stream.send_window.size -= size
                self._session_window.size -= size
                return size
            waiting = (stream.send_window if stream.send_window.size <= 0
                       else self._session_window)
            waiting.opened.clear()
            await waiting.opened.wait()

    async def _send(self, frame: Frame) -> None:
        if self.closed.is_set() and not isinstance(frame, GoAway):
            raise ConnectionResetError("SPDY session closed")
        async with self._send_lock:      # the header zlib stream follows wire order
            await self._send_bytes(self._codec.encode(frame))

    async def _send_data(self, stream_id: int, data: memoryview | bytes, fin: bool) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("SPDY session closed")
        async with self._send_lock:
            await self._send_bytes(data_frame_header(stream_id, len(data), fin))
            if data:
                await self._send_bytes(data)

    # -- bookkeeping --------------------------------------------------------

    def _forget_if_done(self, stream: Stream) -> None:
        if stream.local_closed and stream.remote_closed and not stream._chunks:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            with contextlib.suppress(ConnectionError):
                await work
        keep_task(self._tasks, asyncio.ensure_future(guarded()))
