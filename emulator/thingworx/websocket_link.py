"""The stand-in's websocket layer: an upgrade answered by hand, frames read by websockets' sans-I/O.

aiohttp serves the port (HTTP and the websocket upgrade on one port, like the real server), but
its own websocket reader refuses what a real C SDK edge sends: RSV1 set on continuation frames of
a compressed message (reference §1.4). So the stand-in answers the upgrade itself, takes the
connection over from aiohttp's HTTP parser (``request.protocol.set_parser``), and frames it with
the sans-I/O :class:`websockets.protocol.Protocol` plus its own permessage-deflate extension,
:class:`TolerantDeflate`.

Rules (reference §1.2 to §1.4, §8, §12):

- the 101 answer carries ``Connection: Upgrade`` exactly (the C SDK lower-cases the value and
  compares it with ``upgrade``; a list such as ``keep-alive, Upgrade`` is refused);
- permessage-deflate is accepted when offered, with context takeover in both directions; RSV1 on
  continuation frames is tolerated; one inflater per connection;
- every outgoing AlwaysOn message is one websocket frame no larger than the client's
  ``Max-Frame-Size`` (the caller splits bigger messages into multipart; a frame whose compressed
  form would be larger is sent uncompressed);
- the client's pings are answered with pongs (websockets' protocol does it); the stand-in never
  pings and never requires a pong; unsolicited pongs are ignored;
- every frame the client sends (control frames included) counts against the connection's
  :class:`~emulator.thingworx.limits.FrameRate`; the first frame over it closes the link (1008
  ``rate limit exceeded``), the frames read with it are discarded, and the TCP connection is
  aborted if the client does not close within 2 s (see ``limits`` for why close, not drop);
- at most ``MAX_QUEUED_MESSAGES`` received messages wait for the session: past that the socket is
  no longer read (TCP pushes back on the client) until the session catches up, so a client that
  sends faster than its messages are handled costs no memory and no more than its share of time;
- once the stand-in closes a link (``close``, ``abort``, the rate limit), the messages still
  queued are dropped: the session ends at once instead of handling a backlog.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import zlib
from dataclasses import dataclass

from aiohttp import web
from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.extensions.base import Extension
from websockets.frames import CTRL_OPCODES, Frame, Opcode
from websockets.protocol import CLOSED, OPEN, Protocol, Side
from websockets.typing import ExtensionName

from emulator.thingworx.errors import HandshakeRefused
from emulator.thingworx.limits import FrameRate

__all__ = [
    "WS_GUID",
    "EdgeLink",
    "Handshake",
    "TolerantDeflate",
    "accept_key",
    "negotiate",
    "upgrade",
]

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_EMPTY_BLOCK = b"\x00\x00\xff\xff"
_DEFLATE = "permessage-deflate"
_CLOSE_TIMEOUT = 2.0
MAX_QUEUED_MESSAGES = 64
"""Received messages waiting for the session before the socket is paused."""


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client key (RFC 6455 §4.2.2, reference §1.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


@dataclass(frozen=True)
class Handshake:
    """What the stand-in agreed with the client in the upgrade.

    Attributes:
        key: the client's ``Sec-WebSocket-Key``.
        max_frame_size: the client's ``Max-Frame-Size`` (the default when absent).
        deflate: whether permessage-deflate was negotiated.
        server_no_context_takeover: the client asked the server to reset its compressor.
        client_no_context_takeover: the client offered to reset its own compressor.
        server_max_window_bits: window the server's compressor must stay within.
        extension_header: the ``Sec-WebSocket-Extensions`` value to answer, or None.
        app_key: the ``appKey`` upgrade header, or None.
    """

    key: str
    max_frame_size: int
    deflate: bool
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    extension_header: str | None = None
    app_key: str | None = None


def negotiate(headers: dict[str, str], *, default_max_frame_size: int) -> Handshake:
    """Check an upgrade request's headers and decide the session's parameters.

    Args:
        headers: the request headers, names lower-cased.
        default_max_frame_size: used when ``Max-Frame-Size`` is absent (reference §1.1).

    Returns:
        The agreed :class:`Handshake`.

    Raises:
        HandshakeRefused: not a valid websocket upgrade (answer 400).
    """
    if headers.get("upgrade", "").strip().lower() != "websocket":
        raise HandshakeRefused("missing 'Upgrade: websocket'")
    if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
        raise HandshakeRefused("missing 'Connection: Upgrade'")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeRefused("unsupported Sec-WebSocket-Version (13 expected)")
    key = headers.get("sec-websocket-key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise HandshakeRefused("Sec-WebSocket-Key is not 16 bytes of base64")
    except binascii.Error:
        raise HandshakeRefused("Sec-WebSocket-Key is not base64") from None
    raw_size = headers.get("max-frame-size")
    if raw_size is None or not raw_size.strip():
        max_frame_size = default_max_frame_size
    else:
        try:
            max_frame_size = int(raw_size.strip())
        except ValueError:
            raise HandshakeRefused(f"Max-Frame-Size {raw_size!r} is not a number") from None
        if not 64 <= max_frame_size <= 0x7FFFFFFF:
            raise HandshakeRefused(f"Max-Frame-Size {max_frame_size} is out of range")
    app_key = headers.get("appkey")
    for offer in headers.get("sec-websocket-extensions", "").split(","):
        parts = [p.strip() for p in offer.split(";")]
        if parts[0].lower() != _DEFLATE:
            continue
        params: dict[str, str | None] = {}
        for p in parts[1:]:
            if not p:
                continue
            name, _, value = p.partition("=")
            params[name.strip().lower()] = value.strip().strip('"') or None
        answer = [_DEFLATE]
        server_nct = "server_no_context_takeover" in params
        client_nct = "client_no_context_takeover" in params
        bits = 15
        if server_nct:
            answer.append("server_no_context_takeover")
        if client_nct:
            answer.append("client_no_context_takeover")
        if "server_max_window_bits" in params:
            try:
                bits = int(params["server_max_window_bits"] or "15")
            except ValueError:
                continue
            if not 9 <= bits <= 15:
                continue
            answer.append(f"server_max_window_bits={bits}")
        return Handshake(
            key=key,
            max_frame_size=max_frame_size,
            deflate=True,
            server_no_context_takeover=server_nct,
            client_no_context_takeover=client_nct,
            server_max_window_bits=bits,
            extension_header="; ".join(answer),
            app_key=app_key,
        )
    return Handshake(key=key, max_frame_size=max_frame_size, deflate=False, app_key=app_key)


class TolerantDeflate(Extension):
    """permessage-deflate (RFC 7692) as a real C SDK edge speaks it (reference §1.4, §12).

    Incoming: one raw inflater (window 15) for the whole connection; RSV1 on the first frame marks
    a compressed message and is tolerated (ignored) on its continuation frames; ``00 00 FF FF``
    is appended at the end of each message.

    Outgoing (only when ``compress`` is true): one raw deflater with context takeover, sync
    flush, trailing ``00 00 FF FF`` dropped, RSV1 set. A message whose compressed form would be
    larger than ``frame_limit`` goes uncompressed, and the deflater is rolled back so both ends'
    contexts stay in step.
    """

    name = ExtensionName(_DEFLATE)

    def __init__(
        self,
        *,
        compress: bool,
        frame_limit: int,
        no_context_takeover: bool = False,
        window_bits: int = 15,
    ) -> None:
        self._compress = compress
        self._frame_limit = frame_limit
        self._no_context_takeover = no_context_takeover
        self._window_bits = window_bits
        self._inflater = zlib.decompressobj(wbits=-15)
        self._deflater = self._new_deflater()
        self._in_compressed: bool | None = None  # None: no message in progress

    def _new_deflater(self) -> zlib._Compress:
        return zlib.compressobj(wbits=-self._window_bits, memLevel=8)

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Inflate a data frame of a compressed message; pass others through.

        Raises:
            ProtocolError: RSV1 on a continuation of an uncompressed message, or bad DEFLATE.
            PayloadTooBig: the inflated data exceeds ``max_size``.
        """
        if frame.opcode in CTRL_OPCODES:
            return frame
        if frame.opcode is Opcode.CONT:
            if self._in_compressed is None:
                raise WsProtocolError("continuation frame without a message")
            if not self._in_compressed:
                if frame.rsv1:
                    raise WsProtocolError("RSV1 on a continuation of an uncompressed message")
                if frame.fin:
                    self._in_compressed = None
                return frame
        else:
            self._in_compressed = frame.rsv1
            if not frame.rsv1:
                if frame.fin:
                    self._in_compressed = None
                return frame
        data = bytes(frame.data) + (_EMPTY_BLOCK if frame.fin else b"")
        try:
            out = self._inflater.decompress(data, 0 if max_size is None else max_size)
            if self._inflater.unconsumed_tail:
                raise PayloadTooBig(None, max_size)
        except zlib.error as exc:
            raise WsProtocolError("decompression failed") from exc
        if frame.fin:
            self._in_compressed = None
        return Frame(frame.opcode, out, frame.fin, False, frame.rsv2, frame.rsv3)

    def encode(self, frame: Frame) -> Frame:
        """Deflate a single-frame data message when compression of our frames is on."""
        if not self._compress or frame.opcode in CTRL_OPCODES or not frame.fin:
            return frame
        if frame.opcode is Opcode.CONT:
            return frame
        if self._no_context_takeover:
            self._deflater = self._new_deflater()
        snapshot = self._deflater.copy()
        data = self._deflater.compress(bytes(frame.data)) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        data = data[:-4]
        if len(data) > self._frame_limit:
            self._deflater = snapshot
            return frame
        return Frame(frame.opcode, data, True, True, frame.rsv2, frame.rsv3)


class EdgeLink:
    """One edge client's websocket, after the upgrade.

    It implements the parser interface aiohttp hands the bytes of an upgraded connection to
    (``feed_data``/``feed_eof``) and offers ``recv``/``send``/``close`` to the AlwaysOn session.

    Args:
        transport: the connection's transport.
        handshake: what was agreed in the upgrade.
        max_message_size: the largest websocket message accepted from the client.
        compress_outgoing: deflate our frames when permessage-deflate was negotiated.
        frame_rate: frames per second the client may send on average (0: no limit).
        frame_burst: frames it may send at once above that rate.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        handshake: Handshake,
        *,
        max_message_size: int,
        compress_outgoing: bool,
        frame_rate: float = 0.0,
        frame_burst: int = 1,
    ) -> None:
        self._transport = transport
        self.handshake = handshake
        self._protocol = Protocol(Side.SERVER, state=OPEN, max_size=max_message_size)
        if handshake.deflate:
            self._protocol.extensions = [
                TolerantDeflate(
                    compress=compress_outgoing,
                    frame_limit=handshake.max_frame_size,
                    no_context_takeover=handshake.server_no_context_takeover,
                    window_bits=handshake.server_max_window_bits,
                )
            ]
        self._messages: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._paused = False
        self._discard = False  # we closed the link: queued messages are not handed out
        self._fragments: list[bytes] = []
        self._closed = asyncio.Event()
        self.pings_answered = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._loop = asyncio.get_running_loop()
        self._rate = (
            FrameRate(frame_rate, frame_burst, self._loop.time()) if frame_rate > 0 else None
        )
        self.rate_limited = False

    # aiohttp parser interface -------------------------------------------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Take bytes from the socket (called by aiohttp)."""
        if self._closed.is_set():
            return True, b""
        self._protocol.receive_data(data)
        now = self._loop.time()
        for event in self._protocol.events_received():
            if not isinstance(event, Frame):
                continue
            if self._rate is not None and not self._rate.allow(now):
                self._over_rate()
                break
            self._on_frame(event)
        self._flush()
        return self._closed.is_set(), b""

    def _over_rate(self) -> None:
        """Close (1008) a client past its frame rate; abort it if it does not close in time."""
        assert self._rate is not None
        self.rate_limited = True
        self._discard = True
        self.close_reason = f"rate limit exceeded ({self._rate.rate:g} frames/s)"
        if self._protocol.state is OPEN:
            self._protocol.send_close(1008, self.close_reason)
        self._flush()
        self._loop.call_later(_CLOSE_TIMEOUT, self._transport.abort)
        self._finish()

    def feed_eof(self) -> None:
        """The socket closed (called by aiohttp)."""
        self._protocol.receive_eof()
        self._flush()
        self._finish()

    # session interface -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the websocket is closed (or closing) in either direction."""
        return self._closed.is_set() or self._protocol.state is not OPEN

    @property
    def max_frame_size(self) -> int:
        """The client's Max-Frame-Size."""
        return self.handshake.max_frame_size

    async def recv(self) -> bytes | None:
        """The next complete binary message, or None once the link is closed."""
        message = await self._messages.get()
        if self._discard:
            return None
        if self._paused and self._messages.qsize() <= MAX_QUEUED_MESSAGES // 2:
            self._paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
        return message

    def send(self, payload: bytes) -> None:
        """Send one AlwaysOn message (or chunk) as one binary websocket frame.

        Raises:
            ConnectionError: the link is closed.
            ValueError: the payload is larger than the client's Max-Frame-Size.
        """
        if self.closed:
            raise ConnectionError("websocket closed")
        if len(payload) > self.handshake.max_frame_size:
            raise ValueError(
                f"frame of {len(payload)} bytes over Max-Frame-Size {self.max_frame_size}"
            )
        self._protocol.send_binary(payload)
        self._flush()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and wait (bounded) for the client to close the TCP link."""
        self._discard = True
        if self._protocol.state is OPEN:
            self._protocol.send_close(code, reason)
            self._flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), _CLOSE_TIMEOUT)
        self._transport.close()
        self._finish()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        self._discard = True
        self._transport.abort()
        self._finish()

    async def wait_closed(self) -> None:
        """Wait until the link is closed."""
        await self._closed.wait()

    # internals ---------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                message = b"".join(self._fragments)
                self._fragments = []
                self._messages.put_nowait(message)
                if self._messages.qsize() >= MAX_QUEUED_MESSAGES and not self._paused:
                    self._paused = True
                    self._transport.pause_reading()
        elif frame.opcode is Opcode.PING:
            self.pings_answered += 1  # websockets' protocol queued the pong already
        # pongs (solicited or not) and close frames need nothing more here

    def _flush(self) -> None:
        for data in self._protocol.data_to_send():
            if data:
                if not self._transport.is_closing():
                    self._transport.write(data)
            else:
                if self._transport.can_write_eof() and not self._transport.is_closing():
                    self._transport.write_eof()
        if self._protocol.state is CLOSED or self._protocol.close_expected():
            if self._protocol.close_rcvd is not None:
                self.close_code = self._protocol.close_rcvd.code
                self.close_reason = self.close_reason or self._protocol.close_rcvd.reason
            if self._protocol.state is CLOSED:
                self._transport.close()
                self._finish()

    def _finish(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._messages.put_nowait(None)


async def upgrade(
    request: web.Request,
    handshake: Handshake,
    *,
    max_message_size: int,
    compress_outgoing: bool,
    frame_rate: float = 0.0,
    frame_burst: int = 1,
) -> tuple[web.StreamResponse, EdgeLink]:
    """Answer 101 and take the connection over from aiohttp's HTTP parser.

    Args:
        request: the upgrade request.
        handshake: the result of :func:`negotiate`.
        max_message_size: the largest websocket message accepted.
        compress_outgoing: deflate our frames when permessage-deflate was negotiated.
        frame_rate: frames per second the client may send on average (0: no limit).
        frame_burst: frames it may send at once above that rate.

    Returns:
        The prepared response (return it from the handler once the session ends) and the link.

    Raises:
        ConnectionError: the client went away during the upgrade.
    """
    response = web.StreamResponse(status=101, reason="Switching Protocols")
    response.headers["Upgrade"] = "websocket"
    response.headers["Connection"] = "Upgrade"
    response.headers["Sec-WebSocket-Accept"] = accept_key(handshake.key)
    if handshake.extension_header:
        response.headers["Sec-WebSocket-Extensions"] = handshake.extension_header
    response.force_close()
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        raise ConnectionError("client went away during the upgrade")
    link = EdgeLink(
        transport,
        handshake,
        max_message_size=max_message_size,
        compress_outgoing=compress_outgoing,
        frame_rate=frame_rate,
        frame_burst=frame_burst,
    )
    request.protocol.set_parser(link)  # type: ignore[arg-type]
    request.protocol.keep_alive(False)
    return response, link
