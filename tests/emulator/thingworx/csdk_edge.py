"""A raw edge client for the stand-in's tests that behaves like the PTC C SDK on the wire.

It speaks RFC 6455 over a plain asyncio stream, byte for byte as reference §1 and §12 describe:
the upgrade headers in the C SDK's order (``Host`` without the port), frames masked with an
all-zero key, permessage-deflate with context takeover and RSV1 on *every* frame of a compressed
message (continuations included), the 16-bit length form only. It never answers pings, records
every frame the server sends (so tests can check sizes), and refuses nothing: tests assert.

Above the framing, :class:`CsdkEdge` sends and answers AlwaysOn messages with the project's
codec, the way the C SDK does (AUTH, BIND, NotifyPropertyUpdate, GetMetadata, services).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.alwayson import (
    Auth,
    BaseType,
    Bind,
    DataShape,
    InfoTable,
    Message,
    MessageAssembler,
    Request,
    Response,
    ServiceMetadata,
    Status,
    encode_message,
    metadata_json,
)

EMPTY_BLOCK = b"\x00\x00\xff\xff"
_EMPTY_SHAPE = DataShape(())


class HandshakeFailed(Exception):
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"upgrade answered {status}")
        self.status = status
        self.headers = headers
        self.body = body


@dataclass
class FrameSeen:
    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes  # as on the wire (compressed if rsv1)


@dataclass
class RawSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status_line: str
    headers: list[tuple[str, str]]
    max_frame_size: int
    deflate: bool
    frames: list[FrameSeen] = field(default_factory=list)
    pings: list[bytes] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    close_payload: bytes | None = None

    def __post_init__(self) -> None:
        self._deflater = zlib.compressobj(wbits=-15, memLevel=8)
        self._inflater = zlib.decompressobj(wbits=-15)

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        app_key: str | None,
        max_frame_size: int | None = 8192,
        deflate: bool = False,
        path: str = "/Thingworx/WS",
    ) -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            "User-Agent: ThingWorx C SDK",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Host: 127.0.0.1",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {key}",
        ]
        if deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate")
        if max_frame_size is not None:
            lines.append(f"Max-Frame-Size: {max_frame_size}")
        if app_key is not None:
            lines.append(f"appKey: {app_key}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        text = head.decode("latin-1").split("\r\n")
        status_line = text[0]
        status = int(status_line[9:12])
        headers = []
        for line in text[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        if status != 101:
            length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
            body = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
            writer.close()
            raise HandshakeFailed(status, headers, body)
        sock = cls(reader, writer, status_line, headers, max_frame_size or 8192, False)
        ext = sock.header("Sec-WebSocket-Extensions") or ""
        sock.deflate = "permessage-deflate" in ext and "client_no_context_takeover" not in ext
        return sock

    # sending ---------------------------------------------------------------------------

    def _frame(self, fin: bool, rsv1: bool, opcode: int, payload: bytes) -> bytes:
        first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        n = len(payload)
        if n < 126:
            head = bytes([first, 0x80 | n])
        else:
            assert n <= 0xFFFF, "the C SDK never sends the 64-bit length form"
            head = bytes([first, 0x80 | 126]) + struct.pack(">H", n)
        return head + b"\x00\x00\x00\x00" + payload  # all-zero mask: payload unchanged

    async def send_message(
        self, payload: bytes, *, fragment: int | None = None, compress: bool | None = None
    ) -> None:
        squeeze = self.deflate if compress is None else compress
        if squeeze:
            data = self._deflater.compress(payload) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
            data = data[:-4]
        else:
            data = payload
        size = fragment or self.max_frame_size
        parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        out = b""
        for i, part in enumerate(parts):
            opcode = 0x2 if i == 0 else 0x0
            # The C SDK quirk: RSV1 on every frame of a compressed message (§1.4).
            out += self._frame(i == len(parts) - 1, squeeze, opcode, part)
        self.writer.write(out)
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_ping(self, payload: bytes) -> None:
        await self.send_raw(self._frame(True, False, 0x9, payload))

    async def send_pong(self, payload: bytes) -> None:
        await self.send_raw(self._frame(True, False, 0xA, payload))

    async def send_close(self, code: int = 1000, text: bytes = b"Normal Close") -> None:
        await self.send_raw(self._frame(True, False, 0x8, struct.pack(">H", code) + text))

    # receiving -------------------------------------------------------------------------

    async def recv_frame(self, timeout: float = 5.0) -> FrameSeen:
        async with asyncio.timeout(timeout):
            b1, b2 = await self.reader.readexactly(2)
            n = b2 & 0x7F
            assert not b2 & 0x80, "server frames must not be masked"
            if n == 126:
                (n,) = struct.unpack(">H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)
        seen = FrameSeen(bool(b1 & 0x80), bool(b1 & 0x40), b1 & 0x0F, payload)
        self.frames.append(seen)
        return seen

    async def recv_message(self, timeout: float = 5.0) -> bytes | None:
        """The next data message (None on close); pings are recorded, never answered."""
        parts: list[bytes] = []
        compressed = False
        while True:
            frame = await self.recv_frame(timeout)
            if frame.opcode == 0x9:
                self.pings.append(frame.payload)
                continue
            if frame.opcode == 0xA:
                self.pongs.append(frame.payload)
                continue
            if frame.opcode == 0x8:
                self.close_payload = frame.payload
                return None
            if frame.opcode in (0x1, 0x2):
                compressed = frame.rsv1
                parts = []
            parts.append(frame.payload)
            if frame.fin:
                data = b"".join(parts)
                if compressed:
                    data = self._inflater.decompress(data + EMPTY_BLOCK)
                return data

    def max_frame_seen(self) -> int:
        return max((len(f.payload) for f in self.frames if f.opcode in (0, 1, 2)), default=0)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


ServiceHandler = Callable[[Request], Awaitable[Response] | Response]


class CsdkEdge:
    """AlwaysOn over a :class:`RawSocket`, as the C SDK does it (tests drive it step by step)."""

    def __init__(self, sock: RawSocket, *, chunk_size: int = 8192) -> None:
        self.sock = sock
        self.chunk_size = chunk_size
        self.assembler = MessageAssembler(1_048_576)
        self.next_id = 1
        self.session_id = 0
        self.services: dict[str, tuple[ServiceMetadata, ServiceHandler]] = {}
        self.received: list[Message] = []
        self._serve_task: asyncio.Task[None] | None = None
        self._replies: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak refs
        self._responses: dict[int, asyncio.Future[Response]] = {}

    def _rid(self) -> int:
        rid = self.next_id
        self.next_id += 1
        return rid

    async def send(self, msg: Message, **kw: Any) -> None:
        chunk = self.chunk_size - (4 if self.sock.deflate else 0)  # the C SDK reserves 4 (§1.4)
        for payload in encode_message(msg, chunk_size=chunk):
            await self.sock.send_message(payload, **kw)

    async def recv(self, timeout: float = 5.0) -> Message | None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self.sock.recv_message(timeout)
            if data is None:
                return None
            msg = self.assembler.feed(data, loop.time())
            if msg is not None:
                self.received.append(msg)
                return msg

    async def auth(self, key: str) -> Response:
        await self.send(Auth(self._rid(), (("appKey", key),)))
        answer = await self.recv()
        assert isinstance(answer, Response)
        if answer.ok:
            self.session_id = answer.session_id
        return answer

    async def bind(self, *names: str, unbind: bool = False) -> Response:
        rid = self._rid()
        await self.send(Bind(rid, self.session_id, tuple(names), unbind=unbind))
        if self._serve_task is not None:
            fut = asyncio.get_running_loop().create_future()
            self._responses[rid] = fut
            return await asyncio.wait_for(fut, 5)
        answer = await self.recv()
        assert isinstance(answer, Response), answer
        return answer

    def add_service(self, meta: ServiceMetadata, handler: ServiceHandler) -> None:
        self.services[meta.name] = (meta, handler)

    def metadata_document(self, thing: str) -> dict[str, Any]:
        builtins = [
            ServiceMetadata("GetMetadata", "", _EMPTY_SHAPE, BaseType.JSON),
            ServiceMetadata("NotifyPropertyUpdate", "", _EMPTY_SHAPE, BaseType.NOTHING),
        ]
        return metadata_json(thing, [*builtins, *(m for m, _ in self.services.values())])

    async def answer(self, request: Request) -> Response:
        def reply(status: Status, content: InfoTable | None = None) -> Response:
            return Response(
                status, request.request_id, request.endpoint_id, self.session_id, None, content
            )

        if request.target == "NotifyPropertyUpdate":
            return reply(Status.SUCCESS)
        if request.target == "GetMetadata":
            doc = self.metadata_document(request.entity_name)
            return reply(Status.SUCCESS, InfoTable.single("result", BaseType.JSON, doc))
        entry = self.services.get(request.target)
        if entry is None:
            return reply(Status.NOT_FOUND)
        result = entry[1](request)
        if isinstance(result, Response):
            return result
        return await result

    def serve(self) -> None:
        """Answer requests in the background (responses to our own BINDs are routed too)."""

        async def loop() -> None:
            while True:
                msg = await self.recv(timeout=3600)
                if msg is None:
                    return
                if isinstance(msg, Response):
                    fut = self._responses.pop(msg.request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif isinstance(msg, Request):
                    reply = asyncio.get_running_loop().create_task(self._reply(msg))
                    self._replies.add(reply)
                    reply.add_done_callback(self._replies.discard)

        self._serve_task = asyncio.get_running_loop().create_task(loop())

    async def _reply(self, request: Request) -> None:
        response = await self.answer(request)
        await self.send(response)

    async def close(self) -> None:
        if self._serve_task is not None:
            self._serve_task.cancel()
        for reply in self._replies:
            reply.cancel()
        await self.sock.close()
