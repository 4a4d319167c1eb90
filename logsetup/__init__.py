"""structlog configuration, shared by the agent and the bundled emulators, done once by each
entry point (``jobs-agent``, ``python -m emulator.iothub``, ``python -m emulator.thingworx``).

A pure core (docs/architecture.md): it imports nothing of this project, so the emulators, which
may not import the agent, configure their logging the same way the agent does.

Rules: console rendering in a terminal, JSON lines otherwise; tracebacks are rendered as plain
text without locals (never rich tracebacks with ``show_locals``, which print untrusted data and
can take minutes on a deep value); event names are short lowercase
phrases with bound context (``conn_id``, ``thing``, ``service``, ``job_id``); a processor redacts
secrets — any key that names one (app keys, connection strings, SAS tokens, passwords) and any
value that looks like a SAS token or an IoT Hub connection string — before anything is rendered.
Every line carries its logger's name (``logger``: ``agent.channel``, ``emulator.iothub``...), so
the agent's lines can be told from the bundled emulators' in one stream.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["MAX_FIELD_DEPTH", "REDACTED", "add_logger_name", "configure_logging", "redact_secrets"]

REDACTED = "***"
_SECRET_KEYS = re.compile(
    r"(app_?key|appkey|password|secret|sharedaccesskey|connection_?string|token|signature|sig)$",
    re.IGNORECASE,
)
# Each pattern keeps its group 1 (the label) and replaces the rest of the match.
_SECRET_VALUES = [
    re.compile(r"(SharedAccessKey=)[^;\s\"']+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature\s+)[^\s\"']+", re.IGNORECASE),
    re.compile(r"(appKey[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+", re.IGNORECASE),
]


MAX_FIELD_DEPTH = 16
"""Deepest nesting of a logged field's dicts and lists; deeper parts are replaced by a marker."""
_TOO_DEEP = f"<nested deeper than {MAX_FIELD_DEPTH} levels: not logged>"


def _scrub(value: Any, depth: int = 0) -> Any:
    # Bounded depth: a logged field may hold untrusted data (a device's report, a caller's
    # input); nesting it 100,000 deep must cost neither a RecursionError here nor in a renderer.
    if isinstance(value, str):
        for pattern in _SECRET_VALUES:
            value = pattern.sub(lambda m: m.group(1) + REDACTED, value)
        return value
    if isinstance(value, dict | list | tuple) and depth >= MAX_FIELD_DEPTH:
        return _TOO_DEEP
    if isinstance(value, dict):
        return {
            k: REDACTED if _SECRET_KEYS.search(str(k)) else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace secret values with ``***``."""
    for key in list(event_dict):
        if _SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows the name it was asked for (``structlog.get_logger(name)``)."""

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "jobs-agent")


def add_logger_name(
    logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``logger``, the name the logger was created with."""
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


class _StderrProxy:
    """Writes to whatever ``sys.stderr`` is at the moment of writing (not at configuration time),
    so that a replaced or closed stderr (test capture, daemonisation) never breaks logging."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog (and the stdlib root logger it renders through) once.

    Args:
        level: DEBUG, INFO, WARNING or ERROR.
        fmt: ``console``, ``json``, or ``auto`` (console when ``stream`` is a terminal).
        stream: where to write (default stderr).
    """
    out: Any = stream or _StderrProxy()
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    # Tracebacks are plain text, never with their frames' locals: locals hold untrusted data (a
    # device's report, a request body) that a locals-printing renderer (structlog's default rich
    # tracebacks) spends minutes and hundreds of MB rendering. format_exc_info below turns
    # exc_info into that plain text before any renderer sees it.
    renderer: Any = (
        structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        if console
        else structlog.processors.JSONRenderer()
    )
    numeric = logging.getLevelName(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries (azure SDKs, websockets, aiohttp) log through the stdlib: keep them quieter.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=out, force=True)
