"""The rollout engine: runs every rollout of the store as waves of plain IoT Hub jobs.

One asyncio task (:meth:`RolloutEngine.run`, in the AgentApp's TaskGroup) looks at the store every
``rollouts.poll_interval`` seconds (or at once when a service wakes it) and moves each rollout on
(docs/rollouts.md): it polls the running wave's hub jobs, judges a round once all its jobs ended
(rows read from ``devices.jobs``), stores the verdict, and admits the next round when the hub has
a free job slot, in priority order.

Rules:
- The store is the memory, the hub the source of truth for what a wave did. Before a hub job is
  created its part is stored as an ``intent``; a create that meets ``409104`` JobAlreadyExists
  (after a crash) attaches to the job instead. On start, intents are first looked up on the hub
  (a job created just before a crash holds the slot it would wait for).
- Admission: hub jobs queued, running or due are counted (listed by status) against
  ``iothub.max_concurrent_jobs`` (0: the tier's quota); a ``429004`` on create leaves the part an
  intent (the rollout ``queued`` if it was) and is never surfaced. A round's parts run side by
  side, as many as there are free slots, each taking its own slot. Rollouts are admitted by
  ``priority``, then age, strictly: the first takes every free slot its round can use before
  the next one gets any (a running lower-priority part is never stopped). When the step saw the
  engine's own jobs end, the last listing's count (kept with the engine's own creates and ends)
  stands in for a new listing; ``429004`` stays the guard against others' jobs.
- Pause and cancel wait for the round's end; a cancel also cancels the round's hub jobs that have
  not started running, and skips its parts not yet created.
- The wait between two steps is ``poll_interval``, a tenth of it after a hub job was created,
  doubling at each step while the engine's jobs run (a bounded number of extra job reads). The
  parts a step sees ended are stored in one transaction; their ``devices.jobs`` rows are read
  from the end of that step, after its creates (a freed slot is filled before the hub is asked
  for rows; the round's judge takes them, or reads them itself when a read failed or was lost).
  A round's parts are created together, as many as there are free slots.
- Time comes from the injected ``clock`` (a hub job's ``startTime`` from ``hub_clock``: a job
  starts at once whatever time the engine's clock says); nothing here sleeps but :meth:`run`
  between steps.
- Every status change and every judged round is told to the ``listener`` (the gateway Thing's
  rollout events, :mod:`services.rollout_events`) after it is stored; a listener that fails is
  logged, never lets the engine stop.
- The store is called through :class:`~services.store.rollouts.AsyncRolloutStore`, off the loop.
  A store that fails (:class:`~services.store.errors.StoreUnavailable`) stops the step where it
  is; each verdict being one transaction, the next step starts again from what was stored.
  While it stays down the log gets its first failure, then one line a minute
  (:data:`STORE_DOWN_LOG_EVERY`) with the count of failed steps, and one line when it is back:
  never one warning per step.
- A rollout's status is decided from a fresh read and stored under one lock (requests, verdicts,
  the status after a create, failures: :meth:`RolloutEngine._decided`), and the write expects
  the status and request it was decided from (compare-and-set in its own transaction,
  :class:`~services.store.errors.StaleRolloutError`): a pause or cancel stored by another
  agent's service call between the read and the write makes the engine decide again, never
  lost.
- Several agents (a shared store): only the hub's rollout leader steps
  (:mod:`services.store.leadership`); it confirms its leadership at the start of every step,
  before every wave it starts and before it stores a verdict, and stops at once when it
  cannot. Becoming the leader again runs the recovery above. A wave's hub job first takes a
  shared admission slot (:mod:`services.store.admission`).
- Fencing: a step's store writes carry the leadership epoch it confirmed
  (:mod:`services.store.fencing`); a write refused as fenced (another agent took over
  meanwhile) stops the step at once, as a lost leadership does (one log line).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog

from agent.iothub import DeviceJobResult, HubRequestError, IotHubClient, IotHubError
from agent.settings import JobSettings
from rollouts import (
    DeviceOutcome,
    HubTier,
    IllegalTransitionError,
    RolloutEvent,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    earliest_wave_start,
    judge_wave,
    transition,
    wave_jobs,
)
from rollouts.plan import pause_after
from rollouts.states import Request
from services.store.admission import Admission, LocalAdmission
from services.store.errors import FencedError, StaleRolloutError, StoreUnavailable
from services.store.leadership import Leadership, LocalLeadership
from services.store.rollouts import (
    AsyncRolloutStore,
    DeviceUpdate,
    Expect,
    PartRecord,
    RolloutRecord,
    RolloutStore,
    RoundRecord,
)

__all__ = [
    "METHOD_ROLLOUT",
    "STORE_DOWN_LOG_EVERY",
    "TWIN_ROLLOUT",
    "JudgedRound",
    "RolloutEngine",
    "RolloutListener",
]

TWIN_ROLLOUT = "twinUpdate"
METHOD_ROLLOUT = "deviceMethod"
_HUB_ENDED = frozenset({"completed", "failed", "cancelled", "canceled"})
# The job statuses that hold a slot (a scheduled job once its start time has come).
_HUB_ACTIVE = ("running", "queued", "scheduled")
_QUICK = 10
"""The first wait after a hub job is created: ``poll_interval`` / this (then doubled)."""
_JUDGE_PAGE = 1000
"""Rows per hub page when a round's ``devices.jobs`` rows are read (IoT Hub's most; a part of
an 8 KB IN list holds about 500 devices: one page, where ``jobs.query_page_size`` 100 took 6)."""
_log = structlog.get_logger("services.rollout_engine")

_R = TypeVar("_R")
_DECIDE_TRIES = 5
"""Reads and decisions of a rollout's status before a write that keeps finding it changed
gives up (:meth:`RolloutEngine._decided`)."""

STORE_DOWN_LOG_EVERY = 60.0
"""Seconds between two "still unavailable" lines while the store stays down."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class JudgedRound:
    """A round whose verdict is stored: its devices that succeeded, that failed (retried later
    or not), and its hub jobs."""

    rollout_id: str
    wave: int
    attempt: int
    succeeded: int
    failed: int
    job_ids: tuple[str, ...]


class RolloutListener(Protocol):
    """Told of what the engine stored: status changes and judged rounds."""

    def status_changed(self, record: RolloutRecord, counts: dict[str, int]) -> None:
        """``record`` (as stored) has a new status; ``counts`` are its devices by status."""

    def round_judged(self, judged: JudgedRound) -> None:
        """A round's verdict is stored."""


class _HubFull(Exception):
    """No hub job slot for anyone this step: a ``429004``, no shared slot, or no answer."""


@dataclasses.dataclass(frozen=True, slots=True)
class _NotRun:
    """A member of a cancelled hub job that has no ``devices.jobs`` row: it never ran."""

    device_id: str
    status: str = "canceled"
    error_code: str | None = None
    method_status: int | None = None


class RolloutEngine:
    """Moves every active rollout of ``store`` on, one :meth:`step` at a time.

    Args:
        client: the agent's IoT Hub client.
        store: where rollouts are kept (a synchronous store is wrapped, its calls run off the
            loop).
        jobs: the ``[jobs]`` settings (the hub jobs' window).
        tier: the hub's tier (its job quota when ``max_concurrent_jobs`` is 0).
        max_concurrent_jobs: hub jobs queued or running at once; 0 for the tier's quota.
        poll_interval: seconds between two steps.
        clock: the current UTC time, for the engine's decisions (pauses, retry delays, the
            window, stored times).
        hub_clock: the current UTC time on the hub, the ``startTime`` of the hub jobs (which
            start at once); the real clock unless a test runs the hub on another.
        listener: told of status changes and judged rounds (may be set later), or None.
        leadership: whether this agent drives the hub's rollouts now (default: always).
        admission: the shared admission slots (default: the hub's job list alone).
    """

    def __init__(
        self,
        client: IotHubClient,
        store: RolloutStore | AsyncRolloutStore,
        jobs: JobSettings,
        *,
        tier: HubTier | None = None,
        max_concurrent_jobs: int = 0,
        poll_interval: float = 2.0,
        clock: Callable[[], datetime] = _utcnow,
        hub_clock: Callable[[], datetime] = _utcnow,
        listener: RolloutListener | None = None,
        leadership: Leadership | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.client = client
        self.store = store if isinstance(store, AsyncRolloutStore) else AsyncRolloutStore(store)
        self.tier = tier or HubTier()
        self.max_concurrent_jobs = max_concurrent_jobs or self.tier.max_concurrent_jobs
        self.poll_interval = poll_interval
        self.clock = clock
        self.hub_clock = hub_clock
        self.listener = listener
        self._jobs = jobs
        self._wake = asyncio.Event()
        # Held from reading a rollout's status to storing the status decided from it, by the
        # services' requests and the engine's verdicts alike: without it a pause stored between
        # a verdict's read and its write was overwritten (lost), and a request decided from a
        # status the engine had just changed stored a stale one.
        self._decide = asyncio.Lock()
        self._recovered = False
        self.leadership: Leadership = leadership or LocalLeadership()
        self.admission: Admission = admission or LocalAdmission()
        self._listing: tuple[frozenset[str], datetime | None] = (frozenset(), None)
        self._active_known: int | None = None
        """Hub jobs holding a slot: the last listing's count, with the engine's own creates
        and ends since (None: list before the next admission)."""
        self._pace = poll_interval
        """Seconds until the next step: ``poll_interval``, or less while hub jobs of the
        engine run (:meth:`_paced`)."""
        self._reads: dict[str, asyncio.Task[list[DeviceJobResult]]] = {}
        """``devices.jobs`` reads begun as a part ended, by hub job id (taken by the judge)."""
        self._unread: dict[str, int] = {}
        """Parts seen ended this step whose rows are to be read (hub job id -> devices)."""
        # The store's outage as the log sees it: (since, last line logged, failed steps), or None.
        self._store_down: tuple[datetime, datetime, int] | None = None

    # -- for the services ------------------------------------------------------------------

    async def create(
        self,
        rollout_id: str,
        rollout_type: str,
        operation: dict[str, Any],
        inputs: dict[str, Any],
        plan: RolloutPlan,
        device_ids: Sequence[str],
    ) -> RolloutRecord:
        """Store a new rollout over ``device_ids`` (cut into waves) and wake the engine."""
        sizes = plan.wave_sizes(len(device_ids))
        devices: list[tuple[str, int]] = []
        start = 0
        for wave, size in enumerate(sizes, start=1):
            devices.extend((d, wave) for d in device_ids[start : start + size])
            start += size
        record = RolloutRecord(
            rollout_id=rollout_id,
            type=rollout_type,
            operation=operation,
            inputs=inputs,
            status=RolloutStatus.QUEUED.value,
            requested=None,
            reason=None,
            priority=plan.priority,
            device_count=len(device_ids),
            wave=0,
            wave_count=len(sizes),
            current_job_id=None,
            created_time=self.clock(),
            start_time=None,
            end_time=None,
            last_wave_end=None,
        )
        await self.store.create(record, devices)
        _log.info("rollout created", rollout_id=rollout_id, devices=len(device_ids))
        await self._status_changed(rollout_id, None)
        self.wake()
        return record

    async def request(self, rollout_id: str, event: RolloutEvent) -> RolloutRecord:
        """Apply a pause, resume or cancel (at the next wave boundary while a wave runs).

        Raises:
            KeyError: no such rollout.
            IllegalTransitionError: the rollout's status does not take ``event``.
        """

        async def decide(record: RolloutRecord) -> tuple[RolloutRecord, dict[str, Any]]:
            state = transition(_state(record), event)
            fields: dict[str, Any] = {"status": state.status.value, "requested": _req(state)}
            if state.status.is_terminal:
                fields["end_time"] = self.clock()
            await self.store.update(rollout_id, expect=_expect(record), **fields)
            if state.status.is_terminal:  # after the status: lost between, rounds stay harmlessly
                await self.store.set_round_state(rollout_id, "dropped", where_state="planned")
            return record, fields

        record, fields = await self._decided(rollout_id, decide)
        _log.info("rollout request", rollout_id=rollout_id, request=event.value, **fields)
        await self._status_changed(rollout_id, record.status)
        self.wake()
        updated = await self.store.get(rollout_id)
        assert updated is not None
        return updated

    def wake(self) -> None:
        """Make :meth:`run` take its next step now."""
        self._wake.set()

    async def _decided(
        self, rollout_id: str, decide: Callable[[RolloutRecord], Awaitable[_R]]
    ) -> _R:
        """``decide(record)`` on a fresh read of the rollout, under the engine's decision lock;
        again from a new read when its write (which carries ``expect=_expect(record)``) finds
        the status and request changed meanwhile: by another agent's service call on a shared
        store, which this agent's lock cannot hold back.

        Raises:
            KeyError: no such rollout.
            StaleRolloutError: the rollout changed at each of :data:`_DECIDE_TRIES` tries.
        """
        async with self._decide:
            for _ in range(_DECIDE_TRIES):
                record = await self.store.get(rollout_id)
                if record is None:
                    raise KeyError(rollout_id)
                try:
                    return await decide(record)
                except StaleRolloutError:
                    _log.info("rollout changed meanwhile: deciding again", rollout_id=rollout_id)
        raise StaleRolloutError(
            f"rollout '{rollout_id}' changed {_DECIDE_TRIES} times while a decision was being "
            "stored: try again"
        )

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Step forever, every ``poll_interval`` seconds or when woken."""
        while True:
            self._wake.clear()
            await self.logged_step()
            try:
                async with asyncio.timeout(self._pace):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def logged_step(self) -> None:
        """One :meth:`step` of :meth:`run`: its failure is logged, never raised.

        A store that stays down is logged at its first failed step, then once every
        :data:`STORE_DOWN_LOG_EVERY` seconds (of ``clock``) with the count of failed steps,
        and once when a step gets through again.
        """
        try:
            await self.step()
        except IotHubError as exc:
            _log.warning("rollout step stopped by the hub", error=str(exc))
        except StoreUnavailable as exc:
            self._store_failed(str(exc))
            return
        except Exception:
            _log.exception("rollout step failed")
        if self._store_down is not None:
            # The step got past the store (the hub or a bug may still have stopped it).
            since, _, failed = self._store_down
            self._store_down = None
            down = (self.clock() - since).total_seconds()
            _log.info("rollout store back", failed_steps=failed, down_seconds=round(down, 1))

    def _store_failed(self, error: str) -> None:
        now = self.clock()
        if self._store_down is None:
            self._store_down = (now, now, 1)
            _log.warning("rollout step stopped by the store", error=error)
            return
        since, logged, failed = self._store_down
        failed += 1
        if (now - logged).total_seconds() >= STORE_DOWN_LOG_EVERY:
            logged = now
            _log.warning(
                "rollout store still unavailable",
                failed_steps=failed,
                down_seconds=round((now - since).total_seconds(), 1),
                error=error,
            )
        self._store_down = (since, logged, failed)

    async def step(self) -> None:
        """One look at every active rollout: poll, judge, admit (the leader only)."""
        if not await self.leadership.confirm():
            self._recovered = False  # when it leads again, intents are looked up first
            self._drop_reads()
            return
        fence = self.leadership.fence
        try:
            with self.store.fencing(fence):
                try:
                    await self._step()
                finally:
                    self._read_early()
        except FencedError as exc:
            self._recovered = False
            self._drop_reads()
            _log.warning("rollout step stopped: another agent leads the hub now", error=str(exc))

    async def _step(self) -> None:
        if not self._recovered:
            await self._recover()
            self._recovered = True
        active = await self.store.find([RolloutStatus.QUEUED.value, RolloutStatus.RUNNING.value])
        freed = running = 0
        for record in active:
            if record.status == RolloutStatus.RUNNING.value:
                ended, still = await self._advance(record)
                freed, running = freed + ended, running + still
        self._paced(running, created=False)
        waiting = [
            r
            for r in await self.store.find(
                [RolloutStatus.QUEUED.value, RolloutStatus.RUNNING.value]
            )
            if await self._wants_slot(r)
        ]
        if not waiting:
            return
        waiting.sort(key=lambda r: (r.priority, r.created_time, r.rollout_id))
        free = await self._free_slots(reuse=freed > 0)
        for record in waiting:  # strict priority: the first takes all it can use, then the next
            if free <= 0:
                break
            if not await self.leadership.confirm():
                return
            taken, hub_full = await self._admit(record, free)
            free -= taken
            if taken:
                self._paced(running + taken, created=True)
            if hub_full:
                break

    def _paced(self, running: int, *, created: bool) -> None:
        """Set the wait before the next step: a tenth of ``poll_interval`` after a hub job was
        created, doubled at every step while the engine's jobs run, ``poll_interval`` at most
        (and when none runs). A job that ends quickly is seen soon after its end; one that runs
        long costs at most four reads more than at ``poll_interval``."""
        if created:
            self._pace = self.poll_interval / _QUICK
        elif running:
            self._pace = min(self.poll_interval, self._pace * 2)
        else:
            self._pace = self.poll_interval

    async def _recover(self) -> None:
        """Intents stored before a crash: a job that exists on the hub is attached to."""
        self._active_known = None  # jobs attached here were not counted: list afresh
        for record in await self.store.find(
            [RolloutStatus.QUEUED.value, RolloutStatus.RUNNING.value]
        ):
            for round_ in await self.store.rounds(record.rollout_id, "running"):
                for part in await self.store.parts(record.rollout_id, round_.wave, round_.attempt):
                    if part.state != "intent":
                        continue
                    try:
                        job = await self.client.get_job(part.job_id)
                    except HubRequestError as exc:
                        if exc.http_status == 404:
                            continue
                        raise
                    _log.info("rollout job attached after restart", job_id=part.job_id)
                    await self.admission.created(part.job_id)
                    await self._store_created(record.rollout_id, part, job.status)

    async def _current_round(self, rollout_id: str) -> RoundRecord | None:
        rounds = await self.store.rounds(rollout_id, "running")
        return rounds[0] if rounds else None

    async def _wants_slot(self, record: RolloutRecord) -> bool:
        """True when the rollout's next step is creating a hub job (now, time permitting): a
        part of its round not created yet (beside the parts running), or its next round."""
        round_ = await self._current_round(record.rollout_id)
        if round_ is not None:
            parts = await self.store.parts(record.rollout_id, round_.wave, round_.attempt)
            return any(p.state == "intent" for p in parts)
        if record.status != RolloutStatus.QUEUED.value:
            return False
        return await self._next_round(record, members=False) is not None

    async def _next_round(
        self, record: RolloutRecord, *, members: bool = True
    ) -> RoundRecord | None:
        """The round to start now (a due retry round first, then the next wave), or None.

        Without ``members`` a next wave's round is returned without its devices (empty
        ``members``): enough to know that one is due, without reading them."""
        plan = _plan(record)
        now = self.clock()
        for round_ in await self.store.rounds(record.rollout_id, "planned"):
            if earliest_wave_start(now, not_before=round_.not_before, window=plan.window) <= now:
                return round_
        if record.wave >= record.wave_count:
            return None
        not_before = plan.start_time
        if record.last_wave_end is not None:
            after_pause = pause_after(plan, record.last_wave_end)
            not_before = max(not_before, after_pause) if not_before else after_pause
        if earliest_wave_start(now, not_before=not_before, window=plan.window) > now:
            return None
        wave = record.wave + 1
        ids: tuple[str, ...] = ()
        if members:
            pending = await self.store.device_attempts(
                record.rollout_id, wave=wave, status="pending"
            )
            ids = tuple(device_id for device_id, _ in pending)
        return RoundRecord(record.rollout_id, wave, 1, ids, now, "planned")

    async def _free_slots(self, *, reuse: bool = False) -> int:
        """Job slots free on the hub: the quota less the jobs queued, running or due.

        Only active jobs are listed (``jobStatus`` filter, one listing per status), so a hub's
        history of ended jobs never counts against ``iothub.max_rows_per_call``; a listing that
        stops after ``max_concurrent_jobs`` jobs is enough to see that no slot is free. The jobs
        listed (due or not) are what the shared admission slots see as alive (``_listing``).

        With ``reuse`` (this step saw some of the engine's own hub jobs end) the last listing's
        count is used, kept up to date with the engine's own creates and ends, instead of a new
        listing: a job created by someone else since then meets ``429004`` on create, which
        leaves the part an intent and makes the next step list again.
        """
        if reuse and self._active_known is not None:
            return max(0, self.max_concurrent_jobs - self._active_known)
        self._active_known = None
        listed_at = await self.admission.listing_started()
        now = self.hub_clock()  # a scheduled job's start time is the hub's
        active = 0
        alive: set[str] = set()
        try:
            for status in _HUB_ACTIVE:
                jobs = await self.client.list_jobs(
                    job_status=status, max_jobs=self.max_concurrent_jobs
                )
                alive.update(job.job_id for job in jobs)
                active += sum(
                    1
                    for job in jobs
                    if status != "scheduled" or job.start_time is None or job.start_time <= now
                )
                if active >= self.max_concurrent_jobs:
                    # Not every status listed: the ids are no proof that a job ended (no time).
                    self._listing = (frozenset(alive), None)
                    self._active_known = active
                    return 0
        except IotHubError as exc:
            _log.info("rollout admission waits: jobs not listed", error=str(exc))
            return 0
        self._listing = (frozenset(alive), listed_at)
        self._active_known = active
        return self.max_concurrent_jobs - active

    def _counted(self, job_id: str, *, created: bool) -> None:
        """Keep the last listing's count and ids in step with a job the engine created or saw
        end (the ``reuse`` of :meth:`_free_slots`)."""
        alive, listed_at = self._listing
        if created:
            if job_id not in alive:  # a 409104 attach may be listed already
                self._listing = (alive | {job_id}, listed_at)
                if self._active_known is not None:
                    self._active_known += 1
        elif job_id in alive:
            self._listing = (alive - {job_id}, listed_at)
            if self._active_known is not None:
                self._active_known = max(0, self._active_known - 1)

    async def _admit(self, record: RolloutRecord, free: int) -> tuple[int, bool]:
        """Create up to ``free`` hub jobs of ``record``'s round (its parts not created yet, in
        order), starting the next round when none runs.

        Returns:
            How many slots were taken, and True when the hub has no slot left for anyone this
            step (a ``429004``, or a hub that did not answer).
        """
        round_ = await self._current_round(record.rollout_id)
        if round_ is None:
            round_ = await self._next_round(record)
            if round_ is None:
                return 0, False
            round_ = dataclasses.replace(round_, state="running")
            jobs = wave_jobs(record.rollout_id, round_.wave, round_.attempt, round_.members)
            parts = [
                PartRecord(
                    j.job_id,
                    record.rollout_id,
                    round_.wave,
                    round_.attempt,
                    n,
                    j.query_condition,
                    "intent",
                    None,
                )
                for n, j in enumerate(jobs, start=1)
            ]
            await self.store.add_round(round_, parts, wave=max(record.wave, round_.wave))
            if not parts:  # every member gone: judge the empty round at once
                await self._judge(record, round_)
                return 0, False
        else:
            parts = await self.store.parts(record.rollout_id, round_.wave, round_.attempt)
        intents = [p for p in parts if p.state == "intent"][:free]
        if not intents:
            return 0, False
        # Together: each part's create decides the rollout's status after it under the
        # decision lock (the first moves it to running; a cancel that lands meanwhile cancels
        # the jobs created after it, a pause waits for the round's end).
        outcomes = await asyncio.gather(
            *(self._start_part(record, p) for p in intents), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        taken = sum(1 for o in outcomes if isinstance(o, RolloutRecord))
        if other := next((e for e in errors if not isinstance(e, _HubFull)), None):
            raise other
        return taken, bool(errors)

    async def _start_part(self, record: RolloutRecord, part: PartRecord) -> RolloutRecord | None:
        """Take a slot and create ``part``'s hub job; the rollout as stored after, or None when
        the part stays an intent (or the rollout failed).

        Raises:
            _HubFull: the hub refused the job for want of a slot (``429004``) or did not answer;
                the part stays an intent.
        """
        if not await self.admission.take(part.job_id, *self._listing):
            _log.info("rollout queued: no shared admission slot", rollout_id=record.rollout_id)
            raise _HubFull
        try:
            job = await self._create(record, part)
        except HubRequestError as exc:
            if exc.code == 409104:
                _log.info("rollout job exists: attached", job_id=part.job_id)
                job_status = ""
            elif exc.http_status == 429 or exc.code == 429004:
                _log.info("rollout queued: no hub job slot", rollout_id=record.rollout_id)
                await self.admission.release(part.job_id)
                self._active_known = None  # someone else's job holds it: list afresh
                raise _HubFull from None
            elif 400 <= exc.http_status < 500:
                await self.admission.release(part.job_id)
                await self._fail(record, f"IoT Hub refused wave job '{part.job_id}': {exc}")
                return None
            else:
                _log.warning("rollout job not created", job_id=part.job_id, error=str(exc))
                raise _HubFull from None
        except IotHubError as exc:
            _log.warning("rollout job not created", job_id=part.job_id, error=str(exc))
            raise _HubFull from None
        else:
            job_status = job.status
        await self.admission.created(part.job_id)
        self._counted(part.job_id, created=True)
        return await self._store_created(record.rollout_id, part, job_status)

    async def _store_created(
        self, rollout_id: str, part: PartRecord, job_status: str
    ) -> RolloutRecord:
        """Store ``part`` as created on the hub, with the rollout's status decided from a fresh
        read (a request may have come in while the job was created); the rollout as stored."""

        async def decide(record: RolloutRecord) -> tuple[RolloutRecord, dict[str, Any], bool]:
            fields: dict[str, Any] = {"current_job_id": part.job_id}
            if record.status == RolloutStatus.QUEUED.value:
                state = transition(_state(record), RolloutEvent.WAVE_ADMITTED)
                fields["status"] = state.status.value
            elif record.status == RolloutStatus.PAUSED.value:
                # Paused while the job was being created: the wave runs, the pause waits for its
                # end.
                state = transition(_state(record), RolloutEvent.RESUME_REQUESTED)
                state = transition(state, RolloutEvent.WAVE_ADMITTED)
                state = transition(state, RolloutEvent.PAUSE_REQUESTED)
                fields.update(status=state.status.value, requested=_req(state))
            cancel_late = record.status == RolloutStatus.CANCELLED.value
            if cancel_late:
                fields["current_job_id"] = None
            if record.start_time is None:
                fields["start_time"] = self.clock()
            # One transaction: a created part of a rollout still "queued" would never be polled.
            await self.store.set_part(
                part.job_id, "created", job_status or None, expect=_expect(record), **fields
            )
            return record, fields, cancel_late

        record, fields, cancel_late = await self._decided(rollout_id, decide)
        if cancel_late:  # cancelled while the job was being created: cancel it (not started)
            await self._cancel_late(part)
        await self._status_changed(rollout_id, record.status)
        return dataclasses.replace(record, **fields)

    async def _cancel_late(self, part: PartRecord) -> None:
        """Cancel a hub job created just as its rollout was cancelled (it has not started)."""
        try:
            job = await self.client.cancel_job(part.job_id)
        except IotHubError as exc:
            _log.warning("rollout wave job not cancelled", job_id=part.job_id, error=str(exc))
            return
        await self.store.set_part(part.job_id, "ended", job.status.lower() or "cancelled")
        _log.info("rollout wave job cancelled", job_id=part.job_id)

    async def _create(self, record: RolloutRecord, part: PartRecord) -> Any:
        op = record.operation
        start = self.hub_clock()
        window = self._jobs.default_max_execution_time
        if record.type == TWIN_ROLLOUT:
            return await self.client.create_twin_job(
                part.job_id, part.condition, op["patch"], start, window
            )
        return await self.client.create_method_job(
            part.job_id,
            part.condition,
            op["methodName"],
            op.get("payload"),
            op["responseTimeoutInSeconds"],
            op["connectTimeoutInSeconds"],
            start,
            window,
        )

    async def _advance(self, record: RolloutRecord) -> tuple[int, int]:
        """Poll the running round's hub jobs; judge the round once all of them ended.

        Returns:
            How many of its hub jobs were seen to end (slots the engine itself freed), and how
            many still run.
        """
        round_ = await self._current_round(record.rollout_id)
        if round_ is None:
            return 0, 0
        cancel = record.requested == Request.CANCEL.value
        parts = await self.store.parts(record.rollout_id, round_.wave, round_.attempt)
        created = [p for p in parts if p.state == "created"]
        # The parts running side by side are read together (one request each, concurrently).
        polled = dict(
            zip(
                (p.job_id for p in created),
                await asyncio.gather(*(self.client.get_job(p.job_id) for p in created)),
                strict=True,
            )
        )
        ended: list[tuple[str, str]] = []
        for part in parts:
            if part.state == "intent" and cancel:
                await self.store.set_part(part.job_id, "skipped")
            elif part.state == "created":
                job = polled[part.job_id]
                status = job.status.lower()
                if cancel and status in ("queued", "scheduled", "enqueued"):
                    try:
                        job = await self.client.cancel_job(part.job_id)
                        status = job.status.lower() or "cancelled"
                        _log.info("rollout wave job cancelled", job_id=part.job_id)
                    except HubRequestError as exc:
                        _log.info(
                            "rollout wave job not cancelled", job_id=part.job_id, error=str(exc)
                        )
                if status in _HUB_ENDED:
                    ended.append((part.job_id, status))
                    if job.statistics is not None and job.statistics.device_count is not None:
                        self._unread[part.job_id] = job.statistics.device_count
        await self.store.end_parts(ended)  # one transaction for the parts seen ended
        for job_id, _ in ended:
            await self.admission.release(job_id)  # its hub slot is free
            self._counted(job_id, created=False)
        parts = await self.store.parts(record.rollout_id, round_.wave, round_.attempt)
        if all(p.state in ("ended", "skipped") for p in parts):
            await self._judge(record, round_)
        return len(ended), sum(1 for p in parts if p.state == "created")

    async def _read_rows(self, job_id: str, members: int) -> list[DeviceJobResult]:
        """The ``devices.jobs`` rows of an ended hub job (final: its devices are done)."""
        return await self.client.query_job_results(
            f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'",
            members + 1,
            page_size=_JUDGE_PAGE,
        )

    def _read_early(self) -> None:
        """Start reading the rows of the parts seen ended and not judged yet (``_unread``),
        while the rounds' other parts run; a round's judge takes them (or reads them itself
        when a read failed or was lost). Called at the end of a step, after its creates: a
        slot freed is filled before the hub is asked for the rows."""
        unread, self._unread = self._unread, {}
        for job_id, members in unread.items():
            if job_id not in self._reads:
                self._reads[job_id] = asyncio.create_task(self._read_rows(job_id, members))

    def _drop_reads(self) -> None:
        self._unread = {}
        reads, self._reads = self._reads, {}
        for task in reads.values():
            task.cancel()

    async def _judge(self, record: RolloutRecord, round_: RoundRecord) -> None:
        """Read the round's rows, judge them, store the verdict and the rollout's next status."""
        plan = _plan(record)
        method = record.type == METHOD_ROLLOUT
        parts = await self.store.parts(record.rollout_id, round_.wave, round_.attempt)
        jobs = wave_jobs(record.rollout_id, round_.wave, round_.attempt, round_.members)
        members_of = {j.job_id: j.device_ids for j in jobs}
        rows: list[Any] = []
        by_device: dict[str, DeviceJobResult] = {}

        async def rows_of(part: PartRecord) -> list[DeviceJobResult]:
            if part.state != "ended":
                return []
            self._unread.pop(part.job_id, None)  # read here: not to be read again
            early = self._reads.pop(part.job_id, None)
            if early is not None:
                try:
                    return await early
                except IotHubError:
                    pass  # read again below
            return await self._read_rows(part.job_id, len(members_of.get(part.job_id, ())))

        # Rows read as each part ended (while the others ran), the rest read together now.
        read = await asyncio.gather(*(rows_of(p) for p in parts))
        for part, found in zip(parts, read, strict=True):
            members = members_of.get(part.job_id, ())
            seen = {r.device_id for r in found}
            rows.extend(found)
            by_device.update({r.device_id: r for r in found})
            if part.state == "skipped" or part.hub_status in ("cancelled", "canceled"):
                rows.extend(_NotRun(d) for d in members if d not in seen)
        before = dict(await self.store.device_attempts(record.rollout_id, wave=round_.wave))
        now = self.clock()
        verdict = judge_wave(
            round_.members,
            rows,
            plan=plan,
            method=method,
            wave=round_.wave,
            attempt=round_.attempt,
            ended_at=now,
            attempts=before,
        )
        again = set(verdict.retry.device_ids) if verdict.retry else set()
        failed = set(verdict.failed)
        updates: list[DeviceUpdate] = []
        for device_id in round_.members:
            outcome = verdict.outcomes[device_id]
            row = by_device.get(device_id)
            status = (
                "succeeded"
                if outcome is DeviceOutcome.SUCCEEDED
                else "failed"
                if device_id in failed
                else "pending"
            )
            updates.append(
                DeviceUpdate(
                    device_id=device_id,
                    status=status,
                    attempts=verdict.attempts[device_id],
                    retried=device_id in again and outcome is not DeviceOutcome.NOT_RUN,
                    last_job_id=row.job_id if row is not None else None,
                    error_code=row.error_code if row is not None else None,
                    error_description=(
                        row.error_description
                        if row is not None
                        else "no devices.jobs row: the device no longer exists"
                        if device_id in verdict.missing
                        else None
                    ),
                    method_status=row.method_status if row is not None else None,
                    method_payload=row.method_payload if row is not None else None,
                    end_time=(row.end_time or now)
                    if row is not None and status != "pending"
                    else None,
                )
            )
        next_round = None
        if verdict.retry is not None:
            next_round = RoundRecord(
                record.rollout_id,
                verdict.retry.wave,
                verdict.retry.attempt,
                verdict.retry.device_ids,
                verdict.retry.not_before,
                "planned",
            )

        async def decide(fresh: RolloutRecord) -> tuple[RolloutRecord, RolloutState] | None:
            # A pause or cancel may have come in since the rows were read.
            state = _state(fresh)
            fields: dict[str, Any] = {"current_job_id": None, "last_wave_end": now}
            more = (
                fresh.wave < fresh.wave_count
                or next_round is not None
                or bool(await self.store.rounds(fresh.rollout_id, "planned"))
            )
            retry = next_round
            if state.status is RolloutStatus.QUEUED:  # an empty round judged before any job
                state = RolloutState(RolloutStatus.RUNNING)
            if verdict.abort:
                state = transition(state, RolloutEvent.THRESHOLD_EXCEEDED)
                fields["reason"] = verdict.abort_reason
                retry = None
            elif not more:
                state = transition(state, RolloutEvent.ALL_DEVICES_DONE)
            else:
                state = transition(state, RolloutEvent.WAVE_ENDED)
            fields["status"] = state.status.value
            fields["requested"] = _req(state)
            if state.status.is_terminal:
                fields["end_time"] = now
            if not await self.leadership.confirm():
                return None  # the new leader judges this round from the same rows
            await self.store.judge(
                fresh.rollout_id,
                round_.wave,
                round_.attempt,
                updates,
                retry,
                expect=_expect(fresh),
                **fields,
            )
            if state.status.is_terminal:
                await self.store.set_round_state(fresh.rollout_id, "dropped", where_state="planned")
            return fresh, state

        decided = await self._decided(record.rollout_id, decide)
        if decided is None:
            return
        record, state = decided
        self._round_judged(
            JudgedRound(
                record.rollout_id,
                round_.wave,
                round_.attempt,
                len(verdict.succeeded),
                verdict.failed_count,
                tuple(p.job_id for p in parts if p.state == "ended"),
            )
        )
        await self._status_changed(record.rollout_id, record.status)
        _log.info(
            "rollout round judged",
            rollout_id=record.rollout_id,
            wave=round_.wave,
            attempt=round_.attempt,
            succeeded=len(verdict.succeeded),
            failed=verdict.failed_count,
            retry=len(again),
            status=state.status.value,
        )

    async def _fail(self, record: RolloutRecord, reason: str) -> None:
        async def decide(fresh: RolloutRecord) -> RolloutRecord | None:
            try:
                state = transition(_state(fresh), RolloutEvent.UNRECOVERABLE_ERROR)
            except IllegalTransitionError:
                return None
            await self.store.update(
                fresh.rollout_id,
                expect=_expect(fresh),
                status=state.status.value,
                requested=None,
                reason=reason,
                end_time=self.clock(),
            )
            return fresh

        failed = await self._decided(record.rollout_id, decide)
        if failed is None:
            return
        record = failed
        _log.warning("rollout failed", rollout_id=record.rollout_id, reason=reason)
        await self._status_changed(record.rollout_id, record.status)

    async def _status_changed(self, rollout_id: str, before: str | None) -> None:
        """Tell the listener when the stored status of ``rollout_id`` differs from ``before``."""
        if self.listener is None:
            return
        record = await self.store.get(rollout_id)
        if record is None or record.status == before:
            return
        counts = await self.store.counts(rollout_id)
        try:
            self.listener.status_changed(record, counts)
        except Exception:
            _log.exception("rollout listener failed", rollout_id=rollout_id)

    def _round_judged(self, judged: JudgedRound) -> None:
        if self.listener is None:
            return
        try:
            self.listener.round_judged(judged)
        except Exception:
            _log.exception("rollout listener failed", rollout_id=judged.rollout_id)


def _state(record: RolloutRecord) -> RolloutState:
    requested = Request(record.requested) if record.requested else None
    return RolloutState(RolloutStatus(record.status), requested)


def _expect(record: RolloutRecord) -> Expect:
    """What a write decided from ``record`` expects to find still stored."""
    return record.status, record.requested


def _req(state: RolloutState) -> str | None:
    return state.requested.value if state.requested is not None else None


def _plan(record: RolloutRecord) -> RolloutPlan:
    inputs = dict(record.inputs)
    start = inputs.get("startTime")
    if isinstance(start, str):
        inputs["startTime"] = datetime.fromisoformat(start)
    return RolloutPlan.from_inputs(inputs)
