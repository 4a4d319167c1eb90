"""The IoT Hub client's exceptions, in one tree, and the parser of IoT Hub's error answers.

::

    IotHubError                  base of everything the IoT Hub client raises
    ├── HubRequestError          the hub answered with an error status (http_status, code, name,
    │                            message, tracking_id parsed from the body and headers)
    ├── HubUnreachable           no answer: DNS, TCP, TLS or connection failure
    ├── HubTimeout               no answer within the call's deadline
    ├── HubResponseError         the hub answered 2xx with a body the client cannot read
    ├── LaneFull                 a lane of the client was full; nothing was sent (lane, busy)
    └── CallTooLarge             one call read more than its budget allows; stopped there

``IotHubError`` is an :class:`agent.errors.AgentError`.

Rules:
- msrest and requests exceptions are translated here, at the boundary where they arise
  (:func:`translate`); nothing above this package sees a third-party exception.
- A network failure becomes one plain line naming the cause and the address, e.g. ``IoT Hub
  unreachable (connection refused at 127.0.0.1:8443) for get job 'x'``; requests' and urllib3's
  own texts (``HTTPSConnectionPool(...): Max retries exceeded ...``) never reach a caller.
- Error bodies come in the two formats of reference/iothub.md §1.8: the plain one
  (``{"Message": "ErrorCode:<Name>;<text>", "ExceptionMessage": "Tracking ID:..."}`` with an
  ``iothub-errorcode`` header) and the nested one used by direct methods (``Message`` holds a JSON
  document with a numeric ``errorCode``). A numeric code and a name are completed from each other
  through :data:`HUB_ERROR_CODES` (reference §3.7) when only one of them was sent.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any

from agent.errors import AgentError

__all__ = [
    "HUB_ERROR_CODES",
    "CallTooLarge",
    "HubRequestError",
    "HubResponseError",
    "HubTimeout",
    "HubUnreachable",
    "IotHubError",
    "LaneFull",
    "parse_error_response",
    "translate",
]

# IoT Hub's numeric error codes and their names (reference/iothub.md §3.7).
HUB_ERROR_CODES: dict[int, str] = {
    400000: "GenericBadRequest",
    400004: "ArgumentInvalid",
    400027: "ConnectionForcefullyClosedOnNewConnection",
    401002: "IotHubUnauthorizedAccess",
    401003: "IotHubUnauthorized",
    403003: "JobQuotaExceeded",
    404001: "DeviceNotFound",
    404002: "JobNotFound",
    404103: "DeviceNotOnline",
    404104: "DeviceConnectionClosedRemotely",
    405102: "OperationNotAllowedInCurrentState",
    409104: "JobAlreadyExists",
    412001: "PreconditionFailed",
    412003: "JobRunPreconditionFailed",
    429001: "ThrottlingException",
    429004: "ThrottlingMaxActiveJobCountExceeded",
    504101: "GatewayTimeout",
}
_CODES_BY_NAME = {name.lower(): code for code, name in HUB_ERROR_CODES.items()}
# 404102 is the number the docs' table gives DeviceNotOnline; the service sends 404103.
_CODES_BY_NAME["devicenotonline"] = 404103

_ERROR_CODE_PREFIX = re.compile(r"^\s*ErrorCode\s*:\s*([A-Za-z0-9_]+)\s*;?\s*(.*)$", re.DOTALL)
_TRACKING_ID = re.compile(r"Tracking\s*ID\s*:\s*([^\s,;]+?)(?:-TimeStamp:.*)?$", re.IGNORECASE)


class IotHubError(AgentError):
    """Base class of every exception the IoT Hub client raises."""

    def one_line(self) -> str:
        """The message on one line (whitespace runs folded), or the class name when empty: the
        form kept as the client's last error and logged by the health probe."""
        return " ".join(str(self).split()) or type(self).__name__


class LaneFull(IotHubError):
    """A lane was full: the call was refused before anything was sent to the hub.

    Attributes:
        lane: ``"hub"`` or ``"device"``.
        busy: calls the lane held when this one was refused.
    """

    def __init__(self, message: str, *, lane: str, busy: int) -> None:
        super().__init__(message)
        self.lane = lane
        self.busy = busy


class CallTooLarge(IotHubError):
    """One call read more rows or bytes than ``iothub.max_rows_per_call`` /
    ``iothub.max_bytes_per_call`` allow; reading stopped there."""


class HubRequestError(IotHubError):
    """IoT Hub answered a request with an error status.

    Attributes:
        http_status: the HTTP status (e.g. 429).
        code: IoT Hub's numeric error code (e.g. 429004), or None when the hub sent none and the
            name is unknown.
        name: IoT Hub's error name (e.g. ``ThrottlingMaxActiveJobCountExceeded``), or "".
        message: the hub's human-readable text, or "".
        tracking_id: the hub's tracking id, or "".
        body: the raw body text (truncated), for the logs.
    """

    def __init__(
        self,
        http_status: int,
        *,
        code: int | None = None,
        name: str = "",
        message: str = "",
        tracking_id: str = "",
        body: str = "",
    ) -> None:
        self.http_status = http_status
        self.code = code
        self.name = name
        self.message = message
        self.tracking_id = tracking_id
        self.body = body
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line: ``<code> <name>: <message>`` with whatever parts the hub sent."""
        head = " ".join(part for part in (str(self.code or ""), self.name) if part)
        if not head:
            head = f"HTTP {self.http_status}"
        return f"{head}: {self.message}" if self.message else head


class HubUnreachable(IotHubError):
    """The hub could not be reached (DNS, TCP, TLS or connection failure)."""


class HubTimeout(IotHubError):
    """The hub did not answer within the call's deadline.

    Attributes:
        timeout: the deadline that passed, in seconds.
        connected: False when not even a connection was made within it (so the request was
            never sent); True when the request may have reached the hub.
    """

    def __init__(self, message: str, timeout: float, *, connected: bool = True) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.connected = connected


class HubResponseError(IotHubError):
    """The hub answered with a success status and a body the client cannot read."""


def _code_from(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def _get(doc: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present in ``doc``, case-insensitively."""
    lowered = {str(k).lower(): v for k, v in doc.items()}
    for key in keys:
        if key.lower() in lowered:
            return lowered[key.lower()]
    return None


def parse_error_response(
    http_status: int, headers: Mapping[str, str], body: str | bytes | None
) -> HubRequestError:
    """Build a :class:`HubRequestError` from an IoT Hub error answer.

    Understands the plain body format, the nested direct-method format (reference §1.8), a bare
    ``{"errorCode": ..., "message": ...}`` object, and the ``iothub-errorcode`` header; a body
    that is none of these is kept as the message.

    Args:
        http_status: the HTTP status of the answer.
        headers: the answer's headers (any case).
        body: the answer's body.

    Returns:
        The error, never raising.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    header_name = ""
    for key, value in headers.items():
        if key.lower() == "iothub-errorcode":
            header_name = str(value).strip()
    code: int | None = None
    name = ""
    message = ""
    tracking_id = ""

    doc = _loads(text)
    if isinstance(doc, Mapping):
        outer_message = _get(doc, "Message")
        nested = _loads(outer_message) if isinstance(outer_message, str) else None
        inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else doc
        raw_code = _get(inner, "errorCode", "code")
        code = _code_from(raw_code)
        if code is None and isinstance(raw_code, str):
            name = raw_code
        tracking_id = str(_get(inner, "trackingId") or "")
        inner_message = _get(inner, "message")
        if isinstance(inner_message, str) and inner is not doc:
            message = inner_message
        elif isinstance(outer_message, str):
            match = _ERROR_CODE_PREFIX.match(outer_message)
            if match:
                name = name or match.group(1)
                message = match.group(2).strip()
            else:
                message = outer_message
        elif isinstance(inner_message, str):
            message = inner_message
        exception_message = _get(doc, "ExceptionMessage")
        if not tracking_id and isinstance(exception_message, str):
            found = _TRACKING_ID.search(exception_message.strip())
            if found:
                tracking_id = found.group(1)
    elif text.strip():
        match = _ERROR_CODE_PREFIX.match(text)
        if match:
            name, message = match.group(1), match.group(2).strip()
        else:
            message = text.strip()

    name = name or header_name
    if code is None and name:
        code = _CODES_BY_NAME.get(name.lower())
    if not name and code is not None:
        name = HUB_ERROR_CODES.get(code, "")
    message = " ".join(message.split())
    if len(message) > 300:
        message = message[:297] + "..."
    return HubRequestError(
        http_status,
        code=code,
        name=name,
        message=message,
        tracking_id=tracking_id,
        body=text[:2000],
    )


def translate(exc: BaseException, *, timeout: float, what: str) -> IotHubError:
    """Translate an exception raised by the SDK (msrest, requests) into this package's tree.

    Args:
        exc: the exception the SDK raised.
        timeout: the deadline of the call, for a :class:`HubTimeout`.
        what: a short description of the call (``"get job 'x'"``) for the message.

    Returns:
        The translated exception (never raises).
    """
    if isinstance(exc, IotHubError):
        return exc
    # Imported here so that this module stays importable (and testable) on its own.
    import requests
    from msrest import exceptions as msrest_exceptions
    from msrest.exceptions import DeserializationError  # type: ignore[attr-defined]

    if isinstance(exc, msrest_exceptions.HttpOperationError):
        response = getattr(exc, "response", None)
        status = int(getattr(response, "status_code", 0) or 0)
        headers = dict(getattr(response, "headers", None) or {})
        body = getattr(response, "text", "") if response is not None else ""
        return parse_error_response(status, headers, body)
    inner: BaseException | None = exc
    if isinstance(exc, msrest_exceptions.ClientException):
        inner = exc.inner_exception or exc.__cause__ or exc
    if isinstance(inner, requests.exceptions.ReadTimeout):
        return HubTimeout(f"IoT Hub did not answer {what} within {timeout:g} s", timeout)
    if isinstance(inner, requests.exceptions.Timeout):  # no connection within the timeout
        where = _address(inner)
        return HubTimeout(
            f"IoT Hub unreachable (no connection to {where} within {timeout:g} s) for {what}",
            timeout,
            connected=False,
        )
    if isinstance(inner, requests.exceptions.SSLError):
        return HubUnreachable(
            f"TLS to IoT Hub failed ({_tls_cause(inner)}) for {what}: {_TLS_HINT}"
        )
    if isinstance(inner, requests.exceptions.RequestException):
        return HubUnreachable(f"IoT Hub unreachable ({_network_cause(inner)}) for {what}")
    if isinstance(exc, DeserializationError | ValueError):
        return HubResponseError(f"IoT Hub answered {what} with an unreadable body: {_short(exc)}")
    if isinstance(exc, msrest_exceptions.ClientException):
        return HubUnreachable(f"IoT Hub call failed for {what}: {_short(exc)}")
    return IotHubError(f"IoT Hub call failed for {what}: {type(exc).__name__}: {_short(exc)}")


_TLS_HINT = "check iothub.ca_file and that the address is IoT Hub's HTTPS port"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, outermost first: requests wraps urllib3's MaxRetryError (in
    ``args[0]``), whose ``reason`` holds urllib3's error, whose ``__cause__`` holds the OSError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        first = current.args[0] if current.args else None
        if isinstance(reason, BaseException):
            current = reason
        elif isinstance(first, BaseException):
            current = first
        else:
            current = current.__cause__ or current.__context__


def _address(exc: BaseException) -> str:
    """``host:port`` of the failed request, from urllib3's pool or connection; else "the hub"."""
    for link in _chain(exc):
        for holder in (getattr(link, "pool", None), getattr(link, "conn", None)):
            host = getattr(holder, "host", None)
            if isinstance(host, str) and host:
                port = getattr(holder, "port", None)
                return f"{host}:{port}" if port else host
    return "the hub"


def _network_cause(exc: BaseException) -> str:
    """What went wrong on the way to the hub, in a few plain words with the address."""
    where = _address(exc)
    links = list(_chain(exc))
    for link in links:
        if isinstance(link, socket.gaierror):
            host = where.rsplit(":", 1)[0]
            detail = f": {link.strerror}" if link.strerror else ""
            return f"cannot resolve host {host!r}{detail}"
    for link in links:
        if isinstance(link, ConnectionRefusedError):
            return f"connection refused at {where}"
        if isinstance(link, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
            return f"connection closed by {where} without an answer"
    for link in links:
        if type(link).__name__ in ("RemoteDisconnected", "ProtocolError", "IncompleteRead"):
            return f"connection closed by {where} without an answer"
        if type(link).__name__ == "ProxyError":
            return f"the proxy refused the connection to {where}"
    for link in reversed(links):
        if isinstance(link, OSError) and link.strerror:
            return f"{link.strerror[:1].lower()}{link.strerror[1:]} at {where}"
    return f"{type(links[-1]).__name__} at {where}"


def _tls_cause(exc: BaseException) -> str:
    """Why the TLS handshake failed: the verifier's words, or OpenSSL's reason, and where."""
    where = _address(exc)
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            why = link.verify_message or "certificate verify failed"
            return f"certificate not trusted at {where}: {why}"
    for link in _chain(exc):
        if isinstance(link, ssl.SSLError):
            reason = getattr(link, "reason", None) or link.strerror or type(link).__name__
            return f"{str(reason).replace('_', ' ').lower()} at {where}"
    return f"handshake failed at {where}"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
