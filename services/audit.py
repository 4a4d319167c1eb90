"""The audit trail of the agent's changing calls, and ``AzureIotDeviceJobQueryAudit`` that reads it.

:class:`AuditRecorder` is the registry's :class:`~agent.registry.CallRecorder`: every call of a
service declared with an ``audit_action`` (the Schedule and Cancel services of every Thing, the
wrapper services, StartRollout, PauseRollout, ResumeRollout and CancelRollout), answered or
refused, becomes one :class:`~services.store.audit.AuditEntry`, queued in memory and written to
the :class:`~services.store.audit.AuditLog` by :meth:`AuditRecorder.run` (a task of the app).
:class:`AuditServices` declares ``AzureIotDeviceJobQueryAudit`` on the gateway Thing
(docs/services.md).

Rules:
- Recording never changes a call's answer, and never waits on the store: ``record`` only queues.
- No silent loss. While the store is down, entries wait in memory (at most ``audit.queue_size``)
  and the writer retries (``audit.retry_interval``, doubling up to ``audit.retry_max_interval``).
  An entry arriving with the queue full is dropped, counted (``dropped``) and written to the
  agent's log at WARNING with all its fields; once the store is back, an ``auditGap`` entry
  says how many were dropped and between which times. Entries still queued when the agent stops
  (after a last flush of ``audit.store_timeout``) are logged the same way.
- Inputs are kept as JSON with every member whose name looks like a secret (password, token,
  key, ...) masked, at any depth, and cut past ``audit.max_inputs_chars`` characters with a
  marker saying how long they were; the work is linear in their size.
- QueryAudit first lets the queue reach the store (at most ``audit.store_timeout``), so a
  caller sees the calls it has just made; it answers newest first.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import structlog

from agent.alwayson import BaseType, DataShape, InfoTable, Status, Variant
from agent.registry import CallRecord, RemoteService, ServiceCall, ServiceError
from agent.settings import AuditSettings, JobSettings
from services import rules
from services.jobs import field, page_inputs
from services.paging import PageToken, decode_token, encode_token, scope_digest
from services.rollouts import check_rollout_id_input
from services.shapes import column
from services.store.audit import AuditEntry, AuditLog, AuditQuery, AuditStoreError

__all__ = [
    "AUDIT_SHAPE",
    "QUERY_AUDIT",
    "AuditRecorder",
    "AuditServices",
    "audit_inputs",
]

QUERY_AUDIT = "AzureIotDeviceJobQueryAudit"

AUDIT_SHAPE = DataShape.of(
    column("entryId", BaseType.LONG, "the entry's id in the store (ascending as written)", True),
    column("time", BaseType.DATETIME, "when the call was answered (UTC)"),
    column("agent", BaseType.STRING, "the agent that served it: host/gateway Thing"),
    column("thing", BaseType.STRING, "the Thing the call came to"),
    column("user", BaseType.STRING, "the calling user, when the platform names one"),
    column("service", BaseType.STRING, "the service called"),
    column("action", BaseType.STRING, "what it changes: scheduleTwinJob, cancelJob, ..."),
    column("jobId", BaseType.STRING, "the job concerned, if any"),
    column("rolloutId", BaseType.STRING, "the rollout concerned, if any"),
    column("inputs", BaseType.JSON, "the call's inputs (secrets masked; long ones cut)"),
    column("outcome", BaseType.STRING, "ok, or the refusal's status (BAD_REQUEST, ...)"),
    column("message", BaseType.STRING, "the refusal's one-line message"),
    column(
        "continuationToken",
        BaseType.STRING,
        "first row only: pass it back for the next page; empty on the last page",
    ),
    name="AzureIotDeviceAuditEntry",
)

GAP_ACTION = "auditGap"
"""The action of the entry that records entries dropped while the store was down."""

_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "connectionstring",
    "sharedaccess",
    "signature",
    "apikey",
    "appkey",
)
_MASK = "***"
_MAX_ID_CHARS = 128
_MAX_USER_CHARS = 256
_BATCH = 500
# Row overhead in bytes, beyond its inputs and message, when bounding a QueryAudit page.
_ROW_BYTES = 400

_log = structlog.get_logger("services.audit")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _secret_name(name: str) -> bool:
    folded = "".join(ch for ch in name.lower() if ch.isalnum())
    return folded.endswith("key") or any(word in folded for word in _SECRET_WORDS)


def _clean(value: Any) -> Any:
    """A JSON-ready copy of an input value, secret-looking members masked at any depth."""
    if isinstance(value, Variant):
        value = value.value
    if isinstance(value, Mapping):
        return {str(k): _MASK if _secret_name(str(k)) else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, InfoTable):
        return f"<InfoTable of {len(value.rows)} rows>"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def audit_inputs(inputs: Mapping[str, Any], max_chars: int) -> str:
    """The inputs as the audit log keeps them: JSON text, secrets masked, at most ``max_chars``.

    Longer text is replaced by ``{"cut": "<why>", "head": "<its first characters>"}``, still
    valid JSON, so a reader sees that, and how much, was left out.
    """
    text = json.dumps(_clean(inputs), ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) <= max_chars:
        return text
    budget = max(0, max_chars - 120)  # room for the marker's own text
    head = text[:budget]
    quoted = json.dumps(head, ensure_ascii=False)
    while len(quoted) > budget + 2:  # escapes grow it (at most 6-fold): shrink in proportion
        head = head[: len(head) * budget // len(quoted)]
        quoted = json.dumps(head, ensure_ascii=False)
    why = json.dumps(f"inputs of {len(text)} characters; the first {len(head)} are kept")
    return f'{{"cut":{why},"head":{quoted}}}'


def _named(name: str, inputs: Mapping[str, Any], result: InfoTable | None) -> str:
    """``jobId``/``rolloutId``: the input, else the answer's first row; "" when neither has it."""
    value = inputs.get(name)
    if isinstance(value, Variant):
        value = value.value
    if value is None and result is not None and result.rows and name in result.shape.names:
        value = result.rows[0].get(name)
    return "" if value is None else str(value)[:_MAX_ID_CHARS]


class AuditRecorder:
    """Queues audit entries and writes them to the audit log (the registry's ``recorder``).

    Args:
        log: where the entries are kept.
        settings: the ``[audit]`` settings (queue bound, retries, inputs bound).
        agent: this agent's name in the entries (``host/gateway Thing``).
        clock: the current UTC time (tests inject one).
        new_key: makes each entry's unique key.
    """

    def __init__(
        self,
        log: AuditLog,
        settings: AuditSettings,
        *,
        agent: str,
        clock: Callable[[], datetime] = _utcnow,
        new_key: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.log = log
        self.settings = settings
        self.agent = agent
        self.clock = clock
        """The current UTC time, stamped on each entry (tests set one)."""
        self._new_key = new_key
        self._queue: deque[AuditEntry] = deque()
        self._queued = 0  # entries ever queued
        self._written = 0  # of them, written (the queue is FIFO: the first ones)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self.dropped = 0
        """Entries dropped because the queue was full (all logged at WARNING)."""
        self._gap: list[Any] = [0, None, None]  # dropped since the last write, first, last
        self.failure: str | None = None
        """The store's last failure while it is down; None when writes succeed."""

    @property
    def pending(self) -> int:
        """Entries waiting for the store."""
        return len(self._queue)

    # -- recording (on the event loop, never blocking) -------------------------------------

    def record(self, call: CallRecord) -> None:
        """Queue the entry of one audited call (:class:`~agent.registry.CallRecorder`)."""
        error = call.error
        self.add(
            AuditEntry(
                key=self._new_key(),
                time=self.clock(),
                agent=self.agent,
                thing=call.thing,
                user=call.user[:_MAX_USER_CHARS],
                service=call.service,
                action=call.action,
                job_id=_named("jobId", call.inputs, call.result),
                rollout_id=_named("rolloutId", call.inputs, call.result),
                inputs=audit_inputs(call.inputs, self.settings.max_inputs_chars),
                outcome="ok" if error is None else error.status.name,
                message="" if error is None else error.message,
            )
        )

    def add(self, entry: AuditEntry) -> None:
        """Queue one entry; with the queue full, drop it, count it and log it at WARNING."""
        if len(self._queue) >= self.settings.queue_size:
            self.dropped += 1
            gap = self._gap
            gap[0] += 1
            gap[1] = gap[1] or entry.time
            gap[2] = entry.time
            _log.warning("audit entry dropped: the queue is full", **_fields(entry))
            return
        self._queue.append(entry)
        self._queued += 1
        self._wake.set()

    # -- writing (the app's task) -----------------------------------------------------------

    async def run(self) -> None:
        """Write queued entries in batches until cancelled, retrying while the store is down."""
        delay = self.settings.retry_interval
        while True:
            if not self._queue and not self._gap[0]:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._queue, _BATCH))
            gap, dropped = self._gap_entry(), self._gap
            self._gap = [0, None, None]  # drops from now on make the next gap entry
            written = False
            try:
                await asyncio.to_thread(self.log.append, [*gap, *batch])
                written = True
            except Exception as exc:
                message = str(exc) if isinstance(exc, AuditStoreError) else repr(exc)
                if self.failure is None:
                    _log.warning(
                        "audit store unavailable; entries wait in memory",
                        error=message,
                        pending=len(self._queue),
                        queue_size=self.settings.queue_size,
                    )
                self.failure = message
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_interval)
                continue
            finally:
                if not written:  # failed or cancelled: the gap is still to be recorded
                    later = self._gap
                    self._gap = [
                        dropped[0] + later[0],
                        dropped[1] or later[1],
                        later[2] or dropped[2],
                    ]
            if self.failure is not None:
                _log.info("audit store back", pending=len(self._queue))
            self.failure = None
            delay = self.settings.retry_interval
            for _ in batch:
                self._queue.popleft()
            self._written += len(batch)
            self._progress.set()
            self._progress = asyncio.Event()

    def _gap_entry(self) -> list[AuditEntry]:
        """The ``auditGap`` entry for the entries dropped since the last write (or none)."""
        count, first, last = self._gap
        if not count:
            return []
        return [
            AuditEntry(
                key=self._new_key(),
                time=self.clock(),
                agent=self.agent,
                thing="",
                user="",
                service="",
                action=GAP_ACTION,
                job_id="",
                rollout_id="",
                inputs=json.dumps(
                    {"dropped": count, "first": first.isoformat(), "last": last.isoformat()}
                ),
                outcome="DROPPED",
                message=(
                    f"{count} audit entries were not kept: the audit store was unavailable and "
                    f"{self.settings.queue_size} entries waited already (from {first.isoformat()} "
                    f"to {last.isoformat()}); the agent's log has each one ('audit entry dropped')"
                ),
            )
        ]

    async def flush(self, timeout: float) -> bool:
        """Wait until every entry queued so far is written, at most ``timeout`` seconds.

        Returns:
            True when they are all in the store.
        """
        target = self._queued
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._written < target:
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._wake.set()
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except TimeoutError:
                return False
        return True

    def abandon(self) -> int:
        """Log every entry still queued (at WARNING, all fields) and forget them (at exit).

        Returns:
            How many there were.
        """
        left = list(self._queue)
        self._queue.clear()
        for entry in left:
            _log.warning("audit entry not written: the agent stopped", **_fields(entry))
        if self._gap[0]:
            _log.warning("audit entries dropped and not recorded as a gap", dropped=self._gap[0])
        return len(left)


def _fields(entry: AuditEntry) -> dict[str, Any]:
    fields = asdict(entry)
    fields["time"] = entry.time.isoformat()
    fields.pop("entry_id", None)
    return fields


class AuditServices:
    """``AzureIotDeviceJobQueryAudit`` over one :class:`AuditRecorder` (gateway Thing only).

    Args:
        recorder: the agent's recorder (its log is read; its queue flushed first).
        settings: the ``[jobs]`` settings (``default_max_rows``).
        page_bytes: the most bytes of inputs and messages one page carries, so its answer fits
            one AlwaysOn message; None for no bound but ``maxRows``.
    """

    def __init__(
        self, recorder: AuditRecorder, settings: JobSettings, *, page_bytes: int | None = None
    ) -> None:
        self.recorder = recorder
        self._settings = settings
        self._page_bytes = page_bytes

    def declare(self) -> RemoteService:
        """The ``AzureIotDeviceJobQueryAudit`` service."""
        return RemoteService(
            QUERY_AUDIT,
            "The audit log: who scheduled, cancelled, started, paused what, from which Thing, "
            "with which inputs and outcome; newest first",
            DataShape.of(
                field("startTime", BaseType.DATETIME, "entries at or after this time (UTC)"),
                field("endTime", BaseType.DATETIME, "entries at or before this time (UTC)"),
                field("jobId", BaseType.STRING, "only the entries of this job"),
                field("rolloutId", BaseType.STRING, "only the entries of this rollout"),
                *page_inputs("the most entries to return, newest first", self._settings),
            ),
            BaseType.INFOTABLE,
            AUDIT_SHAPE,
            self.query,
        )

    async def query(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobQueryAudit: the entries the filters select, newest first."""
        inputs = call.inputs
        start: datetime | None = inputs.get("startTime")
        end: datetime | None = inputs.get("endTime")
        if start is not None and end is not None and start > end:
            raise ServiceError(
                f"input startTime {start.isoformat()} is after endTime {end.isoformat()}: give "
                "a startTime at or before endTime"
            )
        job_id = rules.check_job_id(inputs["jobId"]) if inputs.get("jobId") else None
        rollout_id = (
            check_rollout_id_input(inputs["rolloutId"]) if inputs.get("rolloutId") else None
        )
        max_rows = rules.check_max_rows(inputs.get("maxRows", self._settings.default_max_rows))
        scope = scope_digest(
            QUERY_AUDIT,
            call.thing,
            {
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
                "jobId": job_id,
                "rolloutId": rollout_id,
            },
        )
        token = decode_token(inputs.get("continuationToken"), scope)
        before = _before(token)
        recorder = self.recorder
        wait = min(recorder.settings.store_timeout, call.time_left() / 2)
        await recorder.flush(wait)
        query = AuditQuery(start, end, job_id, rollout_id, before, max_rows + 1)
        try:
            entries = await asyncio.to_thread(recorder.log.query, query)
        except AuditStoreError as exc:
            raise ServiceError(
                f"{exc}; the audit log cannot be read now: retry later (new entries wait in "
                "the agent meanwhile)",
                Status.SERVICE_UNAVAILABLE,
            ) from None
        page: list[AuditEntry] = []
        budget = self._page_bytes
        for entry in entries[:max_rows]:
            if budget is not None:
                budget -= _ROW_BYTES + len(entry.inputs) + len(entry.message)
                if budget < 0 and page:
                    break
            page.append(entry)
        rows = [_row(e) for e in page]
        if len(entries) > len(page) and page:
            last = page[-1]
            key = (last.time.isoformat(), str(last.entry_id))
            rows[0]["continuationToken"] = encode_token(scope, PageToken(None, key))
        return InfoTable(AUDIT_SHAPE, rows)


def _before(token: PageToken | None) -> tuple[datetime, int] | None:
    """The (time, entryId) a QueryAudit token continues after; None for the first page."""
    if token is None:
        return None
    if token.key is None:
        raise _unreadable()
    try:
        when = datetime.fromisoformat(token.key[0])
        entry_id = int(token.key[1])
    except ValueError:
        raise _unreadable() from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC), entry_id)


def _unreadable() -> ServiceError:
    return ServiceError(
        "input continuationToken cannot be read; it is not a token this service gave: pass the "
        "continuationToken of the previous page's first row unchanged"
    )


def _row(entry: AuditEntry) -> dict[str, Any]:
    try:
        inputs: Any = json.loads(entry.inputs)
    except ValueError:  # written by something else: show it as text
        inputs = {"text": entry.inputs}
    return {
        "entryId": entry.entry_id,
        "time": entry.time,
        "agent": entry.agent,
        "thing": entry.thing,
        "user": entry.user,
        "service": entry.service,
        "action": entry.action,
        "jobId": entry.job_id,
        "rolloutId": entry.rollout_id,
        "inputs": inputs,
        "outcome": entry.outcome,
        "message": entry.message,
    }
