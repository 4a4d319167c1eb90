"""TLS for many small connections: :class:`ssl.SSLObject` over memory BIOs on a plain transport.

Why not ``loop.create_server(ssl=...)``: asyncio's own TLS layer (``sslproto``, Python 3.11+)
allocates a 256 KiB read buffer per connection, which dominates the memory of an endpoint holding
thousands of mostly idle device connections (benchmarks/bench_mqtt_fleet.py, 1,000 devices with
both ends in one process: 577 KiB per device with it, 57 KiB with this layer). This layer keeps
only OpenSSL's own buffers.

:class:`TlsAdapter` is both the :class:`asyncio.Protocol` of the TCP connection and the
:class:`asyncio.Transport` handed to an application protocol once the handshake is done, so the
application code is the same as over asyncio's TLS. Rules: the application sees
``connection_made`` only after a successful handshake, then decrypted bytes; a failed or timed out
handshake aborts the TCP connection and fails :attr:`TlsAdapter.handshake`; ``close`` sends
close_notify and closes without waiting for the peer's; every TLS error aborts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

__all__ = ["TlsAdapter"]

_READ_CHUNK = 16 * 1024  # one TLS record at most


class TlsAdapter(asyncio.Protocol, asyncio.Transport):
    """TLS between a TCP transport and an application protocol.

    Args:
        context: the TLS context (server or client side).
        app: the application protocol; receives this adapter as its transport.
        server_side: True on the server.
        server_hostname: name checked against the server certificate (client side).
        handshake_timeout: seconds allowed for the handshake before the connection is aborted.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        app: asyncio.Protocol,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float = 30.0,
    ) -> None:
        asyncio.Transport.__init__(self)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._app = app
        self._loop = asyncio.get_running_loop()
        self._raw: asyncio.Transport | None = None
        self._handshake_timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._up = False
        self._closing = False
        #: Done when TLS is established; fails with the TLS or connection error otherwise.
        self.handshake: asyncio.Future[None] = self._loop.create_future()

    # --- the TCP side (asyncio.Protocol) --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_expired)
        self._step_handshake()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if self._up:
            self._pump()
        elif not self._closing:
            self._step_handshake()

    def eof_received(self) -> bool | None:
        self._incoming.write_eof()
        if self._up and not self._closing:
            self._pump()  # reports the end to the application, as close_notify or as an error
        return None  # let asyncio close the TCP transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("closed during TLS handshake"))
            self.handshake.exception()  # retrieved: nobody may be waiting
        if self._up:
            self._app.connection_lost(exc)

    # --- the application side (asyncio.Transport) -----------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not self._up:
            return
        try:
            self._ssl.write(data)
        except ssl.SSLError:
            self.abort()
            return
        self._flush()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._up:
            with contextlib.suppress(ssl.SSLError):  # the peer's close_notify is not awaited
                self._ssl.unwrap()
            self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self._raw is None or self._raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)

    # --- internals ------------------------------------------------------------------------

    def _step_handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError, ValueError) as exc:
            self._flush()  # the alert, if any
            self._fail(exc)
            return
        self._cancel_timer()
        self._up = True
        self._flush()
        self.handshake.set_result(None)
        self._app.connection_made(self)
        self._pump()  # application data may have arrived with the last handshake record

    def _pump(self) -> None:
        while not self._closing:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError:
                self.abort()
                return
            if not chunk:  # the peer's close_notify (SSLObject.read returns b"" for it)
                self._flush()
                self._app.eof_received()
                self.close()
                return
            self._app.data_received(chunk)
            if not self._incoming.pending and not self._ssl.pending():
                break  # all input consumed: skip the read that would only raise SSLWantReadError
        self._flush()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._raw is not None and not self._raw.is_closing():
            self._raw.write(data)

    def _fail(self, exc: BaseException) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
            self.handshake.exception()
        self.abort()

    def _handshake_expired(self) -> None:
        self._timer = None
        if not self._up:
            self._fail(TimeoutError("TLS handshake timed out"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
