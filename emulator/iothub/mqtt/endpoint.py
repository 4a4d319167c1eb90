"""The IoT Hub device endpoint: MQTT 3.1.1 over TLS, as azure-iot-device speaks it.

:class:`DeviceEndpoint` implements :class:`~emulator.iothub.ports.DeviceLink` for one hub. It is
not a broker: device PUBLISHes are requests the hub answers itself (twin GET, reported PATCH,
method responses), and hub messages go to exactly one device connection. Behaviour follows
reference/iothub.md §2.1-2.3 and §6:

- Authentication: CONNECT user name ``{host}/{deviceId}/?api-version=...`` and a device SAS token
  as password (``sr={host}/devices/{deviceId}``), checked with :func:`~emulator.iothub.sas.
  verify_token` against the device's keys. CONNACK 5 on bad credentials or an unknown/disabled
  device, 2 when the client id is empty, a module id, or differs from the user name's device id,
  1 for a protocol level other than 4 (3.1.1).
- One connection per device: an authenticated CONNECT for a connected device takes over and
  closes the old connection (IoT Hub logs 400027).
- Keep-alive enforced at ``keepalive_grace`` times the client's value (0 means IoT Hub's 1177 s);
  the connection is closed when its SAS token expires.
- Sessions keyed by client id: with CleanSession 0 the subscriptions survive reconnects (the SDK
  never re-subscribes after its SAS-renewal reconnect); CleanSession 1 starts and ends empty.
- At most ``max_subscriptions`` filters, only IoT Hub's documented ones; others get the SUBACK
  failure code 0x80. A requested QoS 2 is granted as 1.
- A QoS 2 PUBLISH, a PUBLISH to a topic IoT Hub does not know, and any malformed packet close
  that connection only. Device QoS 1 PUBLISHes are acknowledged with PUBACK.
- A reported-properties patch that is not a JSON object or breaks IoT Hub's twin limits
  (:mod:`emulator.iothub.twin_limits`: 10 levels deep, key rules, 4 KB strings, 32 KB section)
  is answered ``$iothub/twin/res/400/?$rid=...``, changes nothing and leaves the connection up.
  Device JSON is decoded by :func:`~emulator.iothub.twin_limits.decode_json`: nesting is
  measured before decoding, so no payload can recurse the decoder.
- Hub-to-device messages are sent at QoS 0 (the documented QoS for method requests; the
  emulator keeps no in-flight state for twin responses and desired patches either), and only
  when they match one of the connection's subscriptions.

Design: one :class:`asyncio.Protocol` object per connection (behind :class:`~.tls.TlsAdapter`,
which keeps per-connection TLS memory small), no task and no thread per device; a single timer
per connection serves the CONNECT deadline, keep-alive and SAS expiry. All TwinStore calls are
synchronous and made on the event loop thread.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from emulator.iothub import twin_limits
from emulator.iothub.clock import Clock
from emulator.iothub.errors import HubError
from emulator.iothub.mqtt import topics
from emulator.iothub.mqtt.packets import (
    MAX_PACKET_SIZE,
    ConnAck,
    Connect,
    Disconnect,
    MqttProtocolError,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from emulator.iothub.mqtt.tls import TlsAdapter
from emulator.iothub.ports import DeviceLink, MethodReply, TwinStore
from emulator.iothub.sas import SasError, verify_token

__all__ = ["DeviceEndpoint"]

_log = structlog.get_logger("emulator.iothub.mqtt")

#: IoT Hub's keep-alive when a client asks for none (documented maximum, 1177 s).
_DEFAULT_KEEPALIVE = 1177.0

_RC_BAD_PROTOCOL = 1
_RC_IDENTIFIER_REJECTED = 2
_RC_NOT_AUTHORIZED = 5


class _Session:
    """The state IoT Hub keeps per client id: subscribed filters and their granted QoS."""

    __slots__ = ("persistent", "subscriptions")

    def __init__(self, persistent: bool) -> None:
        self.persistent = persistent
        self.subscriptions: dict[str, int] = {}

    def wants(self, topic: str) -> bool:
        return any(topics.topic_matches(f, topic) for f in self.subscriptions)


class DeviceEndpoint:
    """The device-facing MQTT/TLS endpoint of one emulated hub (implements ``DeviceLink``).

    Args:
        twins: the hub core's registry and twin store.
        clock: wall-clock source for SAS expiry and connection-state timestamps.
        keepalive_grace: a connection silent for this many times its keep-alive is closed.
        connect_deadline: seconds a new TCP connection has to finish TLS and send CONNECT.
        max_subscriptions: subscriptions allowed per device (IoT Hub: 5).
        max_packet_size: largest packet accepted from a device (IoT Hub: 256 KiB).
    """

    def __init__(
        self,
        twins: TwinStore,
        clock: Clock,
        *,
        keepalive_grace: float = 1.5,
        connect_deadline: float = 10.0,
        max_subscriptions: int = 5,
        max_packet_size: int = MAX_PACKET_SIZE,
    ) -> None:
        self._twins = twins
        self._clock = clock
        self._grace = keepalive_grace
        self._connect_deadline = connect_deadline
        self._max_subscriptions = max_subscriptions
        self._max_packet_size = max_packet_size
        self._server: asyncio.Server | None = None
        self._open: set[_DeviceConnection] = set()
        self._devices: dict[str, _DeviceConnection] = {}
        self._sessions: dict[str, _Session] = {}
        self._pending: dict[str, tuple[str, asyncio.Future[MethodReply]]] = {}
        self._ready_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._rids = itertools.count(1)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl: ssl.SSLContext) -> int:
        """Listen for devices.

        Args:
            host: address to bind (the SDK connects to the connection string's HostName).
            port: 8883 for the real SDK (it is hard-coded there); 0 picks a free port.
            ssl: the server TLS context (certificate with a SAN for ``host``).

        Returns:
            The bound port.
        """
        if self._server is not None:
            raise RuntimeError("endpoint already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TlsAdapter(
                ssl,
                _DeviceConnection(self),
                server_side=True,
                handshake_timeout=self._connect_deadline,
            ),
            host,
            port,
            reuse_address=True,
            backlog=1024,
        )
        bound = int(self._server.sockets[0].getsockname()[1])
        _log.info("mqtt endpoint listening", host=host, port=bound)
        return bound

    async def stop(self) -> None:
        """Stop listening and drop every connection (devices are marked disconnected)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._open):
            conn.close("endpoint stopping", abort=True)
        if server is not None:
            async with asyncio.timeout(5.0):
                await server.wait_closed()
        _log.info("mqtt endpoint stopped")

    def connected_count(self) -> int:
        """How many devices are connected and authenticated now."""
        return len(self._devices)

    # --- DeviceLink -----------------------------------------------------------------------

    def is_connected(self, device_id: str) -> bool:
        """True while the device has an open, authenticated MQTT connection."""
        return device_id in self._devices

    def is_method_ready(self, device_id: str) -> bool:
        """True while the device is connected and subscribed to ``$iothub/methods/POST/#``."""
        conn = self._devices.get(device_id)
        return conn is not None and topics.METHODS_FILTER in conn.session.subscriptions

    async def wait_method_ready(self, device_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`is_method_ready`; return whether it holds."""
        if self.is_method_ready(device_id):
            return True
        if timeout <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._ready_waiters.setdefault(device_id, set())
        waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._ready_waiters.pop(device_id, None)
        return self.is_method_ready(device_id)

    async def invoke_method(
        self,
        device_id: str,
        method_name: str,
        payload: Any,
        *,
        response_timeout: float,
        connect_timeout: float,
    ) -> MethodReply:
        """Call a direct method on a device and wait for its answer.

        Raises:
            HubError: 404103 DeviceNotOnline when the device is not method-ready within
                ``connect_timeout`` seconds; 504101 GatewayTimeout when it does not answer within
                ``response_timeout`` seconds; 400004 for a method name no topic can carry.
        """
        if not method_name or any(c in method_name for c in "/#+\x00"):
            raise HubError.argument_invalid(f"invalid method name {method_name!r}")
        if not await self.wait_method_ready(device_id, connect_timeout):
            raise HubError.device_not_online(connect_timeout)
        conn = self._devices[device_id]
        rid = format(next(self._rids), "x")
        reply: asyncio.Future[MethodReply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (device_id, reply)
        try:
            body = json.dumps(payload, separators=(",", ":")).encode()
            conn.deliver(topics.method_request_topic(method_name, rid), body)
            conn.log.debug("method sent", method=method_name, rid=rid)
            try:
                async with asyncio.timeout(response_timeout):
                    return await reply
            except TimeoutError:
                conn.log.info("method timed out", method=method_name, rid=rid)
                raise HubError.gateway_timeout(response_timeout) from None
        finally:
            self._pending.pop(rid, None)

    def push_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        """Send a desired-properties patch (it carries ``$version``) if the device is connected
        and subscribed to desired patches; otherwise do nothing."""
        conn = self._devices.get(device_id)
        if conn is None:
            return
        body = json.dumps(dict(patch), separators=(",", ":")).encode()
        if conn.deliver(topics.desired_patch_topic(patch.get("$version")), body):
            conn.log.debug("desired patch sent", version=patch.get("$version"))

    # --- called by connections ------------------------------------------------------------

    def _on_connect(self, conn: _DeviceConnection, packet: Connect) -> None:
        log = _log.bind(client_id=packet.client_id)
        if packet.protocol_level != 4:
            log.info("connect refused", reason="protocol level", level=packet.protocol_level)
            conn.refuse(_RC_BAD_PROTOCOL)
            return
        device_id = packet.client_id
        if not device_id or "/" in device_id:
            log.info("connect refused", reason="client id")
            conn.refuse(_RC_IDENTIFIER_REJECTED)
            return
        user_host, user_device = _parse_username(packet.username)
        if user_device is not None and user_device != device_id:
            log.info("connect refused", reason="client id differs from user name")
            conn.refuse(_RC_IDENTIFIER_REJECTED)
            return
        hub_host = self._twins.hub_host()
        if user_host is None or user_host.split(":", 1)[0].lower() != hub_host.lower():
            log.info("connect refused", reason="user name")
            conn.refuse(_RC_NOT_AUTHORIZED)
            return
        keys = self._twins.device_keys(device_id)
        try:
            if keys is None or packet.password is None:
                raise SasError("unknown device" if keys is None else "no password")
            token = verify_token(
                packet.password.decode("utf-8", "replace"),
                expected_resource=f"{hub_host}/devices/{device_id}",
                key_lookup=lambda _skn: [k for k in keys if k],
                now=self._clock.now().timestamp(),
            )
        except SasError as exc:
            log.info("connect refused", reason=str(exc))
            conn.refuse(_RC_NOT_AUTHORIZED)
            return

        old = self._devices.get(device_id)
        self._devices[device_id] = conn
        if old is not None:
            old.log.info("connection taken over", code=400027)
            old.close("taken over")
        if packet.clean_session:
            self._sessions.pop(device_id, None)
            session = _Session(persistent=False)
            present = False
        else:
            existing = self._sessions.get(device_id)
            present = existing is not None
            session = existing or _Session(persistent=True)
            self._sessions[device_id] = session
        keepalive = float(packet.keepalive) or _DEFAULT_KEEPALIVE
        conn.accept(device_id, session, keepalive * self._grace, float(token.se), present)
        self._twins.set_connection_state(device_id, True, self._clock.now())
        conn.log.debug(
            "device connected", clean_session=packet.clean_session, session_present=present
        )
        if topics.METHODS_FILTER in session.subscriptions:
            self._wake_ready(device_id)

    def _on_subscribe(self, conn: _DeviceConnection, packet: Subscribe) -> None:
        session = conn.session
        allowed = _allowed_filters(conn.device_id)
        codes: list[int] = []
        for topic_filter, qos in packet.topics:
            known = topic_filter in session.subscriptions
            if topic_filter in allowed and (
                known or len(session.subscriptions) < self._max_subscriptions
            ):
                granted = min(qos, 1)
                session.subscriptions[topic_filter] = granted
                codes.append(granted)
            else:
                conn.log.info("subscription refused", topic_filter=topic_filter)
                codes.append(SubAck.FAILURE)
        conn.send(SubAck(packet.packet_id, tuple(codes)))
        conn.log.debug("subscribed", filters=[t for t, _ in packet.topics], granted=codes)
        if topics.METHODS_FILTER in session.subscriptions:
            self._wake_ready(conn.device_id)

    def _on_publish(self, conn: _DeviceConnection, packet: Publish) -> None:
        if packet.qos == 2:
            conn.log.info("qos 2 publish refused", topic=packet.topic)
            conn.close("qos 2")
            return
        topic = packet.topic
        if topic.startswith(topics.TWIN_GET_PREFIX):
            handled = self._twin_get(conn, topic)
        elif topic.startswith(topics.REPORTED_PATCH_PREFIX):
            handled = self._reported_patch(conn, topic, packet.payload)
        elif topic.startswith(topics.METHOD_RESPONSE_PREFIX):
            handled = self._method_response(conn, topic, packet.payload)
        else:
            handled = topic.startswith(f"devices/{conn.device_id}/messages/events/")
            if handled:
                conn.log.debug("telemetry dropped", size=len(packet.payload))
        if not handled:
            conn.log.info("unknown topic", topic=topic)
            conn.close("unknown topic")
            return
        if packet.qos == 1 and packet.packet_id is not None and not conn.closed:
            conn.send(PubAck(packet.packet_id))

    def _twin_get(self, conn: _DeviceConnection, topic: str) -> bool:
        rid = topics.property_bag(topic).get("$rid")
        if rid is None:
            return False
        try:
            body = json.dumps(self._twins.twin_properties(conn.device_id)).encode()
            status = 200
        except HubError as exc:
            body, status = b"", exc.status
        conn.deliver(topics.twin_response_topic(status, rid), body)
        return True

    def _reported_patch(self, conn: _DeviceConnection, topic: str, payload: bytes) -> bool:
        rid = topics.property_bag(topic).get("$rid")
        if rid is None:
            return False
        try:
            patch = twin_limits.decode_section(payload, "properties.reported")
            version: int | None = self._twins.patch_reported(conn.device_id, patch)
            status = 204
        except HubError as exc:
            version, status = None, exc.status
            conn.log.info("reported patch refused", status=status, reason=exc.message)
        conn.deliver(topics.twin_response_topic(status, rid, version), b"")
        return True

    def _method_response(self, conn: _DeviceConnection, topic: str, payload: bytes) -> bool:
        status_text = topic[len(topics.METHOD_RESPONSE_PREFIX) :].split("/", 1)[0]
        rid = topics.property_bag(topic).get("$rid")
        try:
            status = int(status_text)
        except ValueError:
            return False
        if rid is None:
            return False
        pending = self._pending.get(rid)
        if pending is None or pending[0] != conn.device_id or pending[1].done():
            conn.log.info("unexpected method response", rid=rid)
            return True
        value: Any
        text = payload.decode("utf-8", "replace")
        try:
            value = twin_limits.decode_json(text) if text.strip() else None
        except ValueError:
            value = text  # IoT Hub wants JSON; keep what the device said rather than lose it
        pending[1].set_result(MethodReply(status, value))
        return True

    def _on_closed(self, conn: _DeviceConnection) -> None:
        self._open.discard(conn)
        device_id = conn.device_id
        if not device_id or self._devices.get(device_id) is not conn:
            return
        del self._devices[device_id]
        if not conn.session.persistent and self._sessions.get(device_id) is conn.session:
            del self._sessions[device_id]
        self._twins.set_connection_state(device_id, False, self._clock.now())
        conn.log.debug("device disconnected", reason=conn.close_reason)

    def _wake_ready(self, device_id: str) -> None:
        for waiter in self._ready_waiters.get(device_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _clock_now(self) -> float:
        return self._clock.now().timestamp()


class _DeviceConnection(asyncio.Protocol):
    """One TLS connection: bytes in, packets dispatched to the endpoint, packets out.

    One timer serves three deadlines: CONNECT after accept, keep-alive, SAS expiry. It is
    re-armed lazily: incoming bytes only record the time, the timer re-checks when it fires.
    """

    __slots__ = (
        "_deadline",
        "_endpoint",
        "_last_seen",
        "_loop",
        "_reader",
        "_sas_expiry",
        "_timer",
        "_transport",
        "close_reason",
        "closed",
        "device_id",
        "log",
        "session",
    )

    def __init__(self, endpoint: DeviceEndpoint) -> None:
        self._endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        self._reader = PacketReader(endpoint._max_packet_size)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_seen = self._loop.time()
        self._deadline = endpoint._connect_deadline
        self._sas_expiry = float("inf")
        self.device_id = ""
        self.session = _Session(persistent=False)
        self.closed = False
        self.close_reason = ""
        self.log: Any = _log

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._endpoint._open.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._last_seen = self._loop.time()
        try:
            packets = self._reader.feed(data)
        except MqttProtocolError as exc:
            self.log.info("protocol error", error=str(exc))
            self.close("protocol error")
            return
        for packet in packets:
            if self.closed:
                return
            try:
                self._dispatch(packet)
            except Exception:  # a bug or a store failure: lose this connection, not the loop
                self.log.exception("packet handling failed", packet=type(packet).__name__)
                self.close("internal error")
                return

    def eof_received(self) -> bool | None:
        self.close("peer closed")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = "connection lost"
        self._cancel_timer()
        self._endpoint._on_closed(self)

    # dispatch

    def _dispatch(self, packet: Packet) -> None:
        endpoint = self._endpoint
        if not self.device_id:
            if isinstance(packet, Connect):
                endpoint._on_connect(self, packet)
            else:
                self.log.info("protocol error", error="first packet is not CONNECT")
                self.close("protocol error")
            return
        if isinstance(packet, Publish):
            endpoint._on_publish(self, packet)
        elif isinstance(packet, PingReq):
            self.send(PingResp())
        elif isinstance(packet, PubAck):
            pass  # the hub sends QoS 0 only; tolerate acknowledgements anyway
        elif isinstance(packet, Subscribe):
            endpoint._on_subscribe(self, packet)
        elif isinstance(packet, Unsubscribe):
            for topic_filter in packet.topics:
                self.session.subscriptions.pop(topic_filter, None)
            self.send(UnsubAck(packet.packet_id))
        elif isinstance(packet, Disconnect):
            self.close("disconnect")
        else:  # a second CONNECT (§3.1.0-2) or a server-to-client packet
            self.log.info("protocol error", error=f"unexpected {type(packet).__name__}")
            self.close("protocol error")

    # used by the endpoint

    def accept(
        self,
        device_id: str,
        session: _Session,
        keepalive_limit: float,
        sas_expiry: float,
        session_present: bool,
    ) -> None:
        self.device_id = device_id
        self.session = session
        self._deadline = keepalive_limit
        self._sas_expiry = sas_expiry
        self.log = _log.bind(device_id=device_id)
        self.send(ConnAck(0, session_present))
        self._cancel_timer()
        self._arm()

    def refuse(self, return_code: int) -> None:
        self.send(ConnAck(return_code))
        self.close("connect refused")

    def send(self, packet: Packet) -> None:
        if not self.closed and self._transport is not None:
            self._transport.write(packet.encode())

    def deliver(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 0 if a subscription of this connection matches the topic."""
        if self.closed or not self.session.wants(topic):
            return False
        self.send(Publish(topic, payload))
        return True

    def close(self, reason: str, *, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._cancel_timer()
        self._endpoint._on_closed(self)
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()

    # the one timer

    def _arm(self) -> None:
        now = self._loop.time()
        when = self._last_seen + self._deadline
        if self._sas_expiry != float("inf"):
            when = min(when, now + max(0.0, self._sas_expiry - self._endpoint._clock_now()))
        self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self._loop.time() >= self._last_seen + self._deadline:
            if self.device_id:
                self.log.info("keepalive expired", limit=self._deadline)
            else:
                self.log.info("connect deadline passed")
            self.close("keepalive", abort=True)
            return
        if self._endpoint._clock_now() >= self._sas_expiry:
            self.log.info("sas expired")
            self.close("sas expired")
            return
        self._arm()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _parse_username(username: str | None) -> tuple[str | None, str | None]:
    """``{host}/{deviceId}/?api-version=...`` → (host, deviceId); Nones when malformed."""
    if not username:
        return None, None
    path = username.split("?", 1)[0].rstrip("/")
    parts = path.split("/")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None, None
    return parts[0], parts[1]


def _allowed_filters(device_id: str) -> frozenset[str]:
    return frozenset(
        (
            topics.METHODS_FILTER,
            topics.TWIN_RESPONSE_FILTER,
            topics.DESIRED_FILTER,
            f"devices/{device_id}/messages/devicebound/#",
        )
    )


if TYPE_CHECKING:  # mypy checks that the endpoint really implements the port

    def _implements_device_link(endpoint: DeviceEndpoint) -> DeviceLink:
        return endpoint
