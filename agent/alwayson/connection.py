"""One AlwaysOn connection, sans-I/O, for either end (reference §2.3, §5 to §7, §10, §12).

A :class:`Connection` is what both ends of a websocket share: bytes in
(:meth:`Connection.receive_data`), events out (the frozen dataclasses below), bytes to send out
(:meth:`Connection.send_request`, :meth:`Connection.send_response`, ...). It owns the request
ids, the ids of the requests that await an answer, the session id, the answers it builds and
the policy for what does not parse; the I/O layer around it (the agent's channel, the
stand-in's session) moves the bytes, keeps one future per pending request id, runs the timers
and logs. Like websockets' ``Protocol``, it does no I/O, no asyncio, no logging, and takes the
time as an argument (``now``, seconds on any monotonic clock).

The edge side (:attr:`Side.EDGE`) sends AUTH (session id 0xFFFFFFFF) and stores the session id
of its SUCCESS answer; every later message it sends carries it (§2.3, §5.3). The server side
(:attr:`Side.SERVER`) reads nothing but AUTH before a successful AUTH (the assembler refuses
everything else on its header), assigns the session id when the I/O accepts the AUTH
(:meth:`Connection.accept_auth`), and stamps its requests with its endpoint id (§2.3).

Rules (the policy, one table for both ends; "answered" means the connection queued the answer,
which :meth:`Connection.data_to_send` hands out):

========================================  ==================================================
what arrives                              what happens
========================================  ==================================================
a response to a pending request id        :class:`ResponseReceived`; the id is no longer
                                          pending (edge: the AUTH's SUCCESS sets the session)
a response to no pending request id       :class:`UnmatchedResponse` (dropped)
a request (GET/PUT/POST/DELETE)           :class:`RequestReceived`; the I/O answers it with
                                          :meth:`Connection.send_response`
AUTH, BIND or UNBIND at the server        :class:`AuthReceived`, :class:`BindReceived`
AUTH, BIND or UNBIND at the edge          :class:`UnsupportedMessage`; answered BAD_REQUEST
                                          "Message Type not supported" (§7.5)
anything but AUTH before AUTH (server)    :class:`RefusedBeforeAuth`, body unread; a request,
                                          BIND or UNBIND is answered UNAUTHORIZED
                                          "authenticate first", anything else dropped
bytes that do not parse                   :class:`MalformedMessage`: a request, AUTH or BIND
                                          whose request id was read is answered BAD_REQUEST
                                          (§3.2, §10); an answer fails the pending request it
                                          answers; anything else is dropped
a message over the max message size       :class:`OversizedMessage`: never answered; an
                                          answer fails the pending request it answers
a chunk over the pending-bytes limits     :class:`PendingLimitRefused`: its set is dropped; a
                                          request is answered ENTITY_TOO_LARGE; an answer
                                          fails the pending request it answers
========================================  ==================================================

Answers built here echo the request id and endpoint id of what they answer (§2.3, §7.5); the
answers to what could not be read (whose endpoint id is unknown) carry endpoint id 0. Request
ids come from one counter 1..0xFFFFFFFF that wraps (AUTH, BIND and requests all take one, as the
C SDK's, §2.3); pass one :class:`RequestIds` to several connections to share it (the agent keeps
one across its reconnects, the stand-in one for all its connections).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from agent.alwayson import unconfirmed
from agent.alwayson.assembler import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_STALE_AFTER,
    MessageAssembler,
    PendingBudget,
)
from agent.alwayson.errors import (
    AlwaysOnError,
    MessageRefused,
    MessageTooLarge,
    PendingLimitExceeded,
    ProtocolError,
    UsageError,
)
from agent.alwayson.infotable import InfoTable
from agent.alwayson.messagecodec import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_MESSAGE_SIZE, encode_message
from agent.alwayson.messages import (
    AUTH_SESSION_ID,
    Auth,
    Bind,
    Characteristic,
    EntityType,
    Message,
    Method,
    Request,
    Response,
    Status,
)
from agent.alwayson.push import (
    GET_PROPERTY_SUBSCRIPTIONS,
    UPDATE_SUBSCRIBED_PROPERTY_VALUES,
    PropertyValue,
    property_values_params,
    subscriptions_params,
)

__all__ = [
    "ANSWERABLE_CODES",
    "MALFORMED_REASON_LIMIT",
    "UNSUPPORTED_MESSAGE_REASON",
    "AuthReceived",
    "BindReceived",
    "Connection",
    "ConnectionEvent",
    "MalformedMessage",
    "OversizedMessage",
    "PendingLimitRefused",
    "RefusedBeforeAuth",
    "RequestIds",
    "RequestReceived",
    "ResponseReceived",
    "Side",
    "UnmatchedResponse",
    "UnsupportedMessage",
]

UNSUPPORTED_MESSAGE_REASON = "Message Type not supported"
"""The reason of the BAD_REQUEST an edge answers an AUTH or BIND sent to it with (§7.5)."""

BEFORE_AUTH_REASON = "authenticate first"
MALFORMED_REASON_LIMIT = 200
"""Characters of the decoder's error kept in a BAD_REQUEST's reason."""

ANSWERABLE_CODES = frozenset(int(m) for m in Method if m is not Method.KEEP_ALIVE)
"""Codes of the messages that are answered when refused: requests, AUTH, BIND, UNBIND (§2.2)."""

_MAX_REQUEST_ID = 0xFFFFFFFF
_RESPONSE_MIN = 0x40
_AUTH_ONLY = frozenset({int(Method.AUTH)})


class Side(enum.Enum):
    """Which end of the websocket a connection is."""

    EDGE = "edge"
    SERVER = "server"


class RequestIds:
    """Request ids 1, 2, ... 0xFFFFFFFF, 1, ... (never 0; reference §2.3).

    Args:
        first: the first id handed out (1..0xFFFFFFFF).
    """

    def __init__(self, first: int = 1) -> None:
        if not 1 <= first <= _MAX_REQUEST_ID:
            raise UsageError(f"first request id {first} is outside 1..{_MAX_REQUEST_ID}")
        self._next = first

    def __call__(self) -> int:
        """The next request id."""
        value = self._next
        self._next = value + 1 if value < _MAX_REQUEST_ID else 1
        return value


def _new_session_id() -> int:
    # Neither 0 (the edge's "no session") nor 0xFFFFFFFF (the AUTH marker).
    return secrets.randbelow(0xFFFFFFFE - 1) + 1


# ------------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """The peer sent a request (GET/PUT/POST/DELETE); answer it with ``send_response``."""

    request: Request


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The answer to one of our pending requests (its id is no longer pending)."""

    response: Response


@dataclass(frozen=True, slots=True)
class UnmatchedResponse:
    """A response whose request id no pending request of ours has (late, or never sent)."""

    response: Response


@dataclass(frozen=True, slots=True)
class AuthReceived:
    """An AUTH (server side): ``accept_auth`` or ``refuse_auth`` it."""

    auth: Auth


@dataclass(frozen=True, slots=True)
class BindReceived:
    """A BIND or UNBIND (server side, after AUTH); answer it with ``send_response``."""

    bind: Bind


@dataclass(frozen=True, slots=True)
class UnsupportedMessage:
    """An AUTH, BIND or UNBIND sent to the edge; answered BAD_REQUEST (§7.5)."""

    message: Auth | Bind
    answered: bool


@dataclass(frozen=True, slots=True)
class RefusedBeforeAuth:
    """A message other than AUTH before AUTH (server side); its body was not read.

    Attributes:
        code: the message code from its header.
        request_id: its request id.
        answered: whether UNAUTHORIZED was queued (requests, BIND, UNBIND).
    """

    code: int
    request_id: int
    answered: bool


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """Bytes that do not parse.

    Attributes:
        error: the decoder's error.
        answered: whether BAD_REQUEST was queued (a request, AUTH or BIND whose id was read).
        failed: the pending request id this broken answer fails, or None.
    """

    error: ProtocolError
    answered: bool
    failed: int | None


@dataclass(frozen=True, slots=True)
class OversizedMessage:
    """A message or multipart set over the max message size, dropped unanswered.

    Attributes:
        error: the refusal (size, limit, request id and code when known).
        failed: the pending request id this answer fails, or None.
    """

    error: MessageTooLarge
    failed: int | None


@dataclass(frozen=True, slots=True)
class PendingLimitRefused:
    """A chunk or split body that would pass the pending-bytes limits; its set is dropped.

    Attributes:
        error: the refusal (scope, size, limit, code, request id).
        answered: whether ENTITY_TOO_LARGE was queued (a request, AUTH or BIND).
        failed: the pending request id this answer fails, or None.
    """

    error: PendingLimitExceeded
    answered: bool
    failed: int | None


ConnectionEvent = (
    RequestReceived
    | ResponseReceived
    | UnmatchedResponse
    | AuthReceived
    | BindReceived
    | UnsupportedMessage
    | RefusedBeforeAuth
    | MalformedMessage
    | OversizedMessage
    | PendingLimitRefused
)
"""Anything :meth:`Connection.receive_data` returns."""


# -------------------------------------------------------------------------------- connection


class Connection:
    """One AlwaysOn connection, sans-I/O, edge or server side.

    Args:
        side: which end this is.
        chunk_size: the largest message sent before multipart splitting (§1.5, §6); the server
            side lowers it to the client's Max-Frame-Size.
        max_message_size: the largest complete message sent or accepted (§1.5).
        stale_after: seconds after which an incomplete multipart set is dropped (§6.5).
        max_pending_bytes: bytes of incomplete messages this connection may hold.
        budget: the process-wide budget shared with other connections, or None.
        request_ids: where request ids come from (default: a counter of its own).
        endpoint_id: the endpoint id of the requests this side sends (the edge sends 0, §2.3).
        session_ids: where the server side's session ids come from (default: random, never 0
            nor 0xFFFFFFFF).
    """

    def __init__(
        self,
        side: Side,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        stale_after: float = DEFAULT_STALE_AFTER,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        budget: PendingBudget | None = None,
        request_ids: Callable[[], int] | None = None,
        endpoint_id: int = 0,
        session_ids: Callable[[], int] | None = None,
    ) -> None:
        self.side = side
        self.chunk_size = chunk_size
        self.max_message_size = max_message_size
        self.endpoint_id = endpoint_id
        self._session_id: int | None = None
        self._request_ids = request_ids or RequestIds()
        self._session_ids = session_ids or _new_session_id
        self._pending: dict[int, Method | None] = {}  # request id -> AUTH/BIND/UNBIND or None
        self._outbox: list[bytes] = []
        self._assembler = MessageAssembler(
            max_message_size,
            stale_after,
            max_pending_bytes=max_pending_bytes,
            budget=budget,
        )
        if side is Side.SERVER:
            self._assembler.restrict(_AUTH_ONLY, BEFORE_AUTH_REASON)

    # -- state ----------------------------------------------------------------------------

    @property
    def session_id(self) -> int | None:
        """The session id: assigned (server) or received (edge) at AUTH; None before."""
        return self._session_id

    @property
    def authenticated(self) -> bool:
        """True after a successful AUTH."""
        return self._session_id is not None

    @property
    def pending_ids(self) -> frozenset[int]:
        """The ids of our requests that await an answer."""
        return frozenset(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Bytes held for incomplete multipart sets and split bodies."""
        return self._assembler.pending_bytes

    def forget(self, request_id: int) -> None:
        """Stop waiting for the answer to ``request_id`` (the I/O gave up on it); a late answer
        becomes :class:`UnmatchedResponse`."""
        self._pending.pop(request_id, None)

    def expire(self, now: float) -> int:
        """Drop incomplete sets and held bodies older than ``stale_after``; return how many."""
        return self._assembler.expire(now)

    def close(self) -> tuple[frozenset[int], int]:
        """The link is gone: forget every pending request and free the incomplete sets.

        Returns:
            The request ids that were pending (fail their futures) and the bytes freed.
        """
        pending = frozenset(self._pending)
        self._pending.clear()
        self._outbox.clear()
        return pending, self._assembler.clear()

    # -- sending ----------------------------------------------------------------------------

    def encode(self, message: Message) -> list[bytes]:
        """The payloads of ``message`` at this connection's chunk and message sizes.

        Raises:
            MessageTooLarge: over the max message size.
            UsageError: the codec cannot carry it (see :func:`encode_message`).
        """
        return encode_message(
            message, chunk_size=self.chunk_size, max_message_size=self.max_message_size
        )

    def data_to_send(self) -> list[bytes]:
        """The answers this connection queued itself (to refused or malformed messages), in
        order; the list is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def send_auth(self, claims: tuple[tuple[str, str], ...]) -> tuple[int, list[bytes]]:
        """AUTH with ``claims`` (edge side; session id 0xFFFFFFFF, §5.3).

        Returns:
            The request id (now pending) and the payloads.

        Raises:
            UsageError: on the server side, or claims the codec cannot carry.
        """
        self._require(Side.EDGE, "AUTH")
        rid = self._request_ids()
        return rid, self._track(rid, Method.AUTH, Auth(rid, claims, AUTH_SESSION_ID))

    def send_bind(self, names: tuple[str, ...], *, unbind: bool = False) -> tuple[int, list[bytes]]:
        """BIND (or UNBIND) of Thing names (edge side, §5.4), stamped with the session id.

        Returns:
            The request id (now pending) and the payloads.

        Raises:
            MessageTooLarge, UsageError: the codec cannot carry it; or on the server side.
        """
        self._require(Side.EDGE, "BIND")
        rid = self._request_ids()
        bind = Bind(rid, self._session_id or 0, names, unbind=unbind)
        return rid, self._track(rid, bind.method, bind)

    def bind_fits(self, names: tuple[str, ...], *, unbind: bool = False) -> bool:
        """Whether a BIND of ``names`` goes in one plain message within the chunk size (§6.4)."""
        parts = self.encode(Bind(1, self._session_id or 0, names, unbind=unbind))
        return len(parts) == 1 and len(parts[0]) <= self.chunk_size

    def send_request(
        self,
        method: Method | int,
        entity_name: str,
        characteristic: Characteristic,
        target: str,
        params: InfoTable | None = None,
        *,
        entity_type: EntityType = EntityType.THING,
    ) -> tuple[int, list[bytes]]:
        """A request to the peer, stamped with the session id and this side's endpoint id.

        Returns:
            The request id (now pending) and the payloads.

        Raises:
            MessageTooLarge: over the max message size (nothing is pending).
            UsageError: the codec cannot carry it (nothing is pending).
        """
        rid = self._request_ids()
        request = Request(
            Method(method),
            request_id=rid,
            endpoint_id=self.endpoint_id,
            session_id=self._session_id or 0,
            entity_type=entity_type,
            entity_name=entity_name,
            characteristic=characteristic,
            target=target,
            params=params,
        )
        return rid, self._track(rid, None, request)

    def send_subscriptions_request(self, thing: str) -> tuple[int, list[bytes]]:
        """``GetPropertySubscriptions`` of ``thing`` (edge side, after the server's
        ``NotifyPropertyUpdate``; params ``options`` = ``{"hasDeadband":true}``, §7.2).

        Returns:
            The request id (now pending) and the payloads.
        """
        return self._edge_service(thing, GET_PROPERTY_SUBSCRIPTIONS, subscriptions_params())

    def send_property_values(
        self, thing: str, values: tuple[PropertyValue, ...] | list[PropertyValue]
    ) -> tuple[int, list[bytes]]:
        """``UpdateSubscribedPropertyValues`` of ``thing`` carrying ``values``, one row each
        (edge side, §7.3).

        Returns:
            The request id (now pending) and the payloads.

        Raises:
            MessageTooLarge, UsageError: the codec cannot carry it (nothing is pending).
        """
        return self._edge_service(
            thing, UPDATE_SUBSCRIBED_PROPERTY_VALUES, property_values_params(values)
        )

    def _edge_service(self, thing: str, service: str, params: InfoTable) -> tuple[int, list[bytes]]:
        """POST to one of the synchronisation services of ``thing`` (edge side, §7.2, §7.3)."""
        self._require(Side.EDGE, service)
        return self.send_request(Method.POST, thing, Characteristic.SERVICES, service, params)

    def send_event(self, thing: str, event: str, data: InfoTable) -> tuple[int, list[bytes]]:
        """Fire ``event`` of ``thing``: POST, characteristic EVENTS, target the event's name,
        params the event data InfoTable (§7.6).

        Returns:
            The request id (now pending) and the payloads.

        Raises:
            MessageTooLarge, UsageError: the codec cannot carry it (nothing is pending).
        """
        return self.send_request(Method.POST, thing, Characteristic.EVENTS, event, data)

    def send_response(
        self,
        to: Request | Auth | Bind,
        status: Status | int,
        *,
        reason: str | None = None,
        content: InfoTable | None = None,
    ) -> list[bytes]:
        """The answer to ``to``: its request id and endpoint id, our session id (§2.3, §7.5).

        Raises:
            MessageTooLarge: the answer is over the max message size.
            UsageError: the codec cannot carry it.
        """
        return self.encode(self.response(to.request_id, to.endpoint_id, status, reason, content))

    def response(
        self,
        request_id: int,
        endpoint_id: int,
        status: Status | int,
        reason: str | None = None,
        content: InfoTable | None = None,
    ) -> Response:
        """A response stamped with this connection's session id (0 before AUTH)."""
        return Response(Status(status), request_id, endpoint_id, self._session_id or 0,
                        reason, content)  # fmt: skip

    def accept_auth(self, auth: Auth) -> list[bytes]:
        """Accept an AUTH (server side): assign a session id, read every message from now on,
        and answer SUCCESS carrying the new session id (§5.3)."""
        self._require(Side.SERVER, "accept_auth")
        self._session_id = self._session_ids()
        self._assembler.restrict(None)
        return self.send_response(auth, Status.SUCCESS)

    def refuse_auth(self, auth: Auth, reason: str) -> list[bytes]:
        """Refuse an AUTH (server side): AUTH_FAILURE_STATUS with the AUTH's own session id."""
        self._require(Side.SERVER, "refuse_auth")
        answer = Response(Status(unconfirmed.AUTH_FAILURE_STATUS), auth.request_id,
                          auth.endpoint_id, auth.session_id, reason)  # fmt: skip
        return self.encode(answer)

    # -- receiving --------------------------------------------------------------------------

    def receive_data(self, payload: bytes, now: float) -> ConnectionEvent | None:
        """Take one incoming websocket payload (a message or a multipart chunk).

        Args:
            payload: the payload.
            now: the current time in seconds (monotonic), for stale-set expiry.

        Returns:
            What happened (see the module's table), or None while a multipart set or split
            body is incomplete. Answers the connection wrote are in :meth:`data_to_send`.
        """
        try:
            message = self._assembler.feed(payload, now)
        except MessageRefused as exc:
            return self._refused_before_auth(exc)
        except PendingLimitExceeded as exc:
            answered = exc.code in ANSWERABLE_CODES and self._answer_refusal(
                exc.request_id, 0, Status.ENTITY_TOO_LARGE, str(exc)
            )
            return PendingLimitRefused(exc, answered, self._fail(exc.code, exc.request_id))
        except MessageTooLarge as exc:
            return OversizedMessage(exc, self._fail(exc.code, exc.request_id))
        except ProtocolError as exc:
            return self._malformed(exc)
        except AlwaysOnError as exc:  # the assembler raises nothing else; belt and braces
            return self._malformed(ProtocolError(str(exc)))
        if message is None:
            return None
        if isinstance(message, Response):
            if message.request_id not in self._pending:
                return UnmatchedResponse(message)
            if self._pending.pop(message.request_id) is Method.AUTH and message.ok:
                self._session_id = message.session_id  # stamped on everything sent from now on
            return ResponseReceived(message)
        if isinstance(message, Request):
            return RequestReceived(message)
        if self.side is Side.EDGE:  # AUTH, BIND, UNBIND are the edge's to send, not to receive
            answered = self._answer_refusal(
                message.request_id,
                message.endpoint_id,
                Status.BAD_REQUEST,
                UNSUPPORTED_MESSAGE_REASON,
            )
            return UnsupportedMessage(message, answered)
        if isinstance(message, Auth):
            return AuthReceived(message)
        return BindReceived(message)

    # -- internals ----------------------------------------------------------------------------

    def _require(self, side: Side, what: str) -> None:
        if self.side is not side:
            raise UsageError(f"{what} is for the {side.value} side of a connection")

    def _track(self, rid: int, kind: Method | None, message: Message) -> list[bytes]:
        payloads = self.encode(message)
        self._pending[rid] = kind
        return payloads

    def _fail(self, code: int | None, request_id: int | None) -> int | None:
        """The pending request an answer that cannot be read fails (it is no longer pending)."""
        if request_id is None or (code is not None and code < _RESPONSE_MIN):
            return None
        if request_id not in self._pending:
            return None
        del self._pending[request_id]
        return request_id

    def _malformed(self, exc: ProtocolError) -> MalformedMessage:
        rid, code = exc.request_id, exc.code
        if rid is not None and code in ANSWERABLE_CODES:
            reason = f"malformed message: {exc}"[:MALFORMED_REASON_LIMIT]
            answered = self._answer_refusal(rid, 0, Status.BAD_REQUEST, reason)
            return MalformedMessage(exc, answered, None)
        return MalformedMessage(exc, False, self._fail(code, rid) if code is not None else None)

    def _refused_before_auth(self, exc: MessageRefused) -> RefusedBeforeAuth:
        code, rid = exc.code, exc.request_id
        assert code is not None and rid is not None  # a refusal is decided on a read header
        answered = code in ANSWERABLE_CODES and self._answer_refusal(
            rid, exc.endpoint_id, Status.UNAUTHORIZED, str(exc)
        )
        return RefusedBeforeAuth(code, rid, answered)

    def _answer_refusal(
        self, request_id: int | None, endpoint_id: int, status: Status, reason: str
    ) -> bool:
        """Queue the answer to a message refused unread; False when it cannot be built."""
        if request_id is None:
            return False
        try:
            self._outbox.extend(self.encode(self.response(request_id, endpoint_id, status, reason)))
        except AlwaysOnError:
            return False
        return True
