"""The registry of Things and the remote services they carry, and the generic service dispatcher.

This is the public API the services (``services/``, ``wrappers/``) program against; the channel
(``agent/channel/``) calls :meth:`ThingRegistry.dispatch` for each service request it receives.

Rules:
- A service is declared once, as a :class:`RemoteService`: its inputs are a DataShape whose field
  aspects ``isRequired`` (BOOLEAN) and ``defaultValue`` (typed as the field) the dispatcher
  enforces, so handlers receive validated, typed inputs with defaults applied
  (:class:`ServiceCall`). The same declaration feeds the GetMetadata JSON (reference §7.4), so a
  Composer user sees exactly what is enforced.
- Every Thing carries ``GetMetadata`` (result JSON) and ``NotifyPropertyUpdate`` (result NOTHING),
  as the C SDK registers them on every bound Thing (reference §7.2, §7.4).
- A Thing may also declare remote properties (:meth:`ThingRegistry.add_property`, pushed by the
  channel with ``UpdateSubscribedPropertyValues``) and events (:meth:`ThingRegistry.add_event`,
  each with the DataShape of its event data); both appear in its GetMetadata JSON (§7.3, §7.4).
- Every call runs under a deadline (``RemoteService.timeout`` or ``jobs.call_deadline``).
- Whatever a handler does, :meth:`ThingRegistry.dispatch` either returns the result or raises a
  :class:`ServiceError` with an AlwaysOn status and a one-line message; unexpected exceptions are
  logged with their traceback and reach the caller only as a one-line INTERNAL_SERVER_ERROR.
- Programming mistakes in declarations (a bad name, a default of the wrong type, a duplicate
  service) raise :class:`RegistryError` when the service is added, never at call time.
- A service declared with an ``audit_action`` changes something (schedules, cancels, starts...):
  every call of it that reaches the Thing, answered or refused (a bad input included), is handed
  once to the registry's :class:`CallRecorder` as a :class:`CallRecord` after its answer is known.
  Recording never changes the answer: a recorder that raises is logged and ignored. Reads
  (``audit_action`` None) are not recorded.

Input typing (reference §4, §12): a cell normally carries the declared base type. Also accepted,
in :data:`ACCEPTED_INPUT_TYPES` and nowhere else: a NOTHING cell (the input is absent), a VARIANT
cell holding the declared type, and the lossless integer widenings INTEGER → LONG, INTEGER →
NUMBER and LONG → NUMBER (exact values only).
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from agent.alwayson import (
    AlwaysOnError,
    BaseType,
    DataShape,
    EventMetadata,
    FieldDefinition,
    InfoTable,
    PropertyMetadata,
    ServiceMetadata,
    Status,
    Variant,
    coerce_value,
    metadata_json,
)
from agent.errors import AgentError
from agent.settings import JobSettings

__all__ = [
    "ACCEPTED_INPUT_TYPES",
    "DEFAULT_VALUE_ASPECT",
    "GET_METADATA",
    "IS_REQUIRED_ASPECT",
    "NOTIFY_PROPERTY_UPDATE",
    "RESULT_FIELD",
    "CallRecord",
    "CallRecorder",
    "RegistryError",
    "RemoteService",
    "ServiceCall",
    "ServiceError",
    "ServiceHandler",
    "ThingRegistry",
]

IS_REQUIRED_ASPECT = "isRequired"
"""Input aspect (BOOLEAN): the caller must give this input (unless it has a default)."""

DEFAULT_VALUE_ASPECT = "defaultValue"
"""Input aspect (typed as the field): the value used when the caller gives none."""

GET_METADATA = "GetMetadata"
NOTIFY_PROPERTY_UPDATE = "NotifyPropertyUpdate"
RESULT_FIELD = "result"
"""Column of a primitive result's one-row InfoTable (reference §4, §7.5)."""

_MAX_NAME_BYTES = 127  # names of 128 bytes or more are mis-encoded by the C SDK (§12.1)
_TWO_TO_53 = 2**53

ACCEPTED_INPUT_TYPES: Mapping[BaseType, frozenset[BaseType]] = MappingProxyType(
    {
        BaseType.LONG: frozenset({BaseType.INTEGER}),
        BaseType.NUMBER: frozenset({BaseType.INTEGER, BaseType.LONG}),
    }
)
"""Declared base type → other cell types accepted for it (besides itself, NOTHING, VARIANT)."""


class RegistryError(AgentError):
    """A Thing or service declaration the registry refuses (a programming mistake)."""


class ServiceError(AgentError):
    """A service call that failed: what handlers raise, and what :meth:`ThingRegistry.dispatch`
    raises for every failure. The channel sends ``status`` and ``message`` to the caller.

    Args:
        message: one line saying what was wrong and what to do (newlines are flattened).
        status: the AlwaysOn status; BAD_REQUEST (the default) for the caller's mistakes,
            NOT_FOUND, INTERNAL_SERVER_ERROR, SERVICE_UNAVAILABLE, GATEWAY_TIMEOUT as fits.
    """

    def __init__(self, message: str, status: Status = Status.BAD_REQUEST) -> None:
        self.message = " ".join(str(message).split())
        self.status = status
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"ServiceError({self.message!r}, {self.status.name})"


@dataclass(frozen=True)
class ServiceCall:
    """One call of a service, as its handler receives it.

    Attributes:
        thing: the Thing the call is for.
        service: the service name.
        inputs: every declared input that was given or has a default, validated and typed
            (absent optional inputs without a default are not in the mapping).
        deadline: event-loop time (``asyncio.get_running_loop().time()``) by which the answer
            must be sent; the dispatcher cancels the handler then.
        log: a structlog logger bound with ``thing``, ``service`` and ``call_id``.
        user: the calling user when the platform names one (see
            :data:`agent.alwayson.unconfirmed.SERVICE_CALL_USER_HEADER`), else "".
    """

    thing: str
    service: str
    inputs: dict[str, Any]
    deadline: float
    log: FilteringBoundLogger
    user: str = ""

    def time_left(self) -> float:
        """Seconds until :attr:`deadline` (never negative)."""
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


ServiceHandler = Callable[[ServiceCall], Awaitable[Any]]
"""A service implementation: returns an ``InfoTable`` or a plain value of the result base type
(``None`` for NOTHING), or raises :class:`ServiceError`."""


@dataclass(frozen=True)
class CallRecord:
    """One answered call of a service declared with an ``audit_action``.

    Attributes:
        thing: the Thing the call came to.
        service: the service name.
        action: the service's ``audit_action``.
        user: the calling user when the platform names one, else "".
        inputs: the typed inputs (defaults applied); when the inputs were refused, the cells
            the caller sent, as far as they could be read.
        result: the answer's InfoTable (None for a refused call or a NOTHING result).
        error: the refusal, None when the call succeeded.
    """

    thing: str
    service: str
    action: str
    user: str
    inputs: Mapping[str, Any]
    result: InfoTable | None
    error: ServiceError | None


class CallRecorder(Protocol):
    """Receives the :class:`CallRecord` of every audited call (the audit log's seam).

    ``record`` runs on the event loop right after the answer is known: it must not block (queue
    the record and write it elsewhere) and should not raise (the registry logs and ignores it).
    """

    def record(self, call: CallRecord) -> None:
        """Take one record."""
        ...


@dataclass(frozen=True)
class RemoteService:
    """A remote service as declared to ThingWorx.

    Args:
        name: the service name (1..127 UTF-8 bytes).
        description: shown in Composer.
        inputs: the input DataShape; field aspects ``isRequired`` (bool) and ``defaultValue``
            (a value of the field's base type) are enforced by the dispatcher.
        result_type: the result base type (INFOTABLE, a primitive, or NOTHING).
        result_shape: the result DataShape when ``result_type`` is INFOTABLE (its name shows
            as ``aspects.dataShape`` in the metadata); None otherwise.
        handler: the implementation.
        timeout: the call's deadline in seconds; None → ``jobs.call_deadline``.
        audit_action: what a call changes, in a word (``scheduleTwinJob``, ``cancelJob``,
            ``startRollout``...): its calls are handed to the registry's :class:`CallRecorder`
            (the audit log); None for a read, which is not recorded.

    Raises:
        RegistryError: an inconsistent declaration (bad name, a default that does not fit its
            field, ``isRequired`` not a bool, a result shape on a primitive result...).
    """

    name: str
    description: str
    inputs: DataShape
    result_type: BaseType
    result_shape: DataShape | None
    handler: ServiceHandler = field(compare=False)
    timeout: float | None = None
    audit_action: str | None = None

    def __post_init__(self) -> None:
        _check_name("service", self.name)
        if not isinstance(self.inputs, DataShape):
            raise RegistryError(f"service {self.name}: inputs must be a DataShape")
        if not isinstance(self.result_type, BaseType):
            raise RegistryError(f"service {self.name}: result_type must be a BaseType")
        if self.result_shape is not None and self.result_type is not BaseType.INFOTABLE:
            raise RegistryError(
                f"service {self.name}: a result_shape needs result_type INFOTABLE, "
                f"not {self.result_type.type_name}"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise RegistryError(f"service {self.name}: timeout must be > 0 s")
        if not callable(self.handler):
            raise RegistryError(f"service {self.name}: handler must be an async callable")
        object.__setattr__(self, "inputs", _normalise_inputs(self.name, self.inputs))

    def required(self, input_name: str) -> bool:
        """True when the input is declared ``isRequired``."""
        return bool(self.inputs.field(input_name).aspects.get(IS_REQUIRED_ASPECT, False))


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name:
        raise RegistryError(f"a {kind} name must be a non-empty str")
    if "\x00" in name or len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise RegistryError(
            f"{kind} name {name[:40]!r} must be 1..{_MAX_NAME_BYTES} UTF-8 bytes without NUL"
        )


class _Interner:
    """Canonical copies of equal input fields and shapes, so that the same service declared on
    many Things (every device Thing has the same GetJob, the same wrapper inputs...) keeps one
    DataShape, not one per Thing: ≈14 KB a device Thing before, measured with 1,000 Things.

    Fields are equal when their name, base type, description and aspects are, each aspect value
    compared by its type and ``repr`` (so ``1``, ``True`` and ``1.0``, or ``0.0`` and ``-0.0``,
    stay apart); shapes when their name and interned fields are. Bounded (least recently used
    out first): shapes declared once per Thing pass through without crowding out shared ones.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._fields: OrderedDict[tuple[Any, ...], FieldDefinition] = OrderedDict()
        self._shapes: OrderedDict[tuple[Any, ...], DataShape] = OrderedDict()

    def field(self, f: FieldDefinition) -> FieldDefinition:
        key = (
            f.name,
            f.base_type,
            f.description,
            tuple((k, type(v), repr(v)) for k, v in f.aspects.items()),
        )
        return self._get(self._fields, key, lambda: f)

    def shape(self, name: str, fields: tuple[FieldDefinition, ...]) -> DataShape:
        key = (name, *(id(f) for f in fields))  # interned fields: identity is equality
        return self._get(self._shapes, key, lambda: DataShape(fields, name))

    def _get(
        self, table: OrderedDict[tuple[Any, ...], _V], key: tuple[Any, ...], make: Callable[[], _V]
    ) -> _V:
        """The entry under ``key`` (now the most recently used), else ``make()`` stored there."""
        found = table.get(key)
        if found is not None:
            table.move_to_end(key)
            return found
        value = make()
        table[key] = value
        if len(table) > self._size:
            table.popitem(last=False)
        return value


_V = TypeVar("_V")
_D = TypeVar("_D", PropertyMetadata, EventMetadata)
_INTERNED = _Interner(8192)


def _normalise_inputs(service: str, inputs: DataShape) -> DataShape:
    """Check the ``isRequired``/``defaultValue`` aspects and type each default as its field.

    The result is interned (:class:`_Interner`): equal declarations share one DataShape.
    """
    fields: list[FieldDefinition] = []
    for f in inputs:
        _check_name(f"input of {service}", f.name)
        aspects = dict(f.aspects)
        required = aspects.get(IS_REQUIRED_ASPECT, False)
        if not isinstance(required, bool):
            raise RegistryError(f"service {service}: input {f.name}: isRequired must be a bool")
        if DEFAULT_VALUE_ASPECT in aspects:
            try:
                default = coerce_value(f.base_type, aspects[DEFAULT_VALUE_ASPECT])
            except AlwaysOnError as exc:
                raise RegistryError(
                    f"service {service}: input {f.name}: defaultValue: {exc}"
                ) from None
            if default is None:
                del aspects[DEFAULT_VALUE_ASPECT]
            else:
                aspects[DEFAULT_VALUE_ASPECT] = default
        fields.append(_INTERNED.field(FieldDefinition(f.name, f.base_type, f.description, aspects)))
    return _INTERNED.shape(inputs.name, tuple(fields))


_EMPTY_SHAPE = DataShape(())


class ThingRegistry:
    """The Things the agent binds and their services; dispatches service calls.

    Args:
        jobs: the job settings; ``call_deadline`` is the deadline of services declared
            without a timeout.
    """

    def __init__(self, jobs: JobSettings) -> None:
        self.recorder: CallRecorder | None = None
        """Where the calls of services with an ``audit_action`` go; None records nothing."""
        self._default_timeout = jobs.call_deadline
        self._things: dict[str, dict[str, RemoteService]] = {}
        self._properties: dict[str, dict[str, PropertyMetadata]] = {}
        self._events: dict[str, dict[str, EventMetadata]] = {}
        self._call_ids = itertools.count(1)
        self._log: FilteringBoundLogger = structlog.get_logger("agent.registry")

    # -- declarations -------------------------------------------------------------------------

    def add_thing(self, name: str) -> None:
        """Add a Thing (with its built-in services); adding an existing Thing does nothing.

        Raises:
            RegistryError: the name is empty, has NUL, or is 128 UTF-8 bytes or more.
        """
        _check_name("Thing", name)
        if name in self._things:
            return
        self._things[name] = {
            GET_METADATA: RemoteService(
                GET_METADATA,
                "the Thing's properties, services and events (reference §7.4)",
                _EMPTY_SHAPE,
                BaseType.JSON,
                None,
                self._get_metadata,
            ),
            NOTIFY_PROPERTY_UPDATE: RemoteService(
                NOTIFY_PROPERTY_UPDATE,
                "called by the server after a bind; answered at once",
                _EMPTY_SHAPE,
                BaseType.NOTHING,
                None,
                _notify_property_update,
            ),
        }

    def add_service(self, thing: str, service: RemoteService) -> None:
        """Add a service to a Thing.

        Raises:
            RegistryError: the Thing is unknown, or already has a service of that name.
        """
        services = self._things.get(thing)
        if services is None:
            raise RegistryError(f"unknown Thing {thing!r}: add_thing() it first")
        if service.name in services:
            raise RegistryError(f"Thing {thing!r} already has a service {service.name!r}")
        services[service.name] = service

    def add_property(self, thing: str, prop: PropertyMetadata) -> None:
        """Declare a remote property of a Thing (its aspects carry ``pushType``).

        Raises:
            RegistryError: the Thing is unknown, the name is bad or declared already.
        """
        self._declare(thing, "property", prop.name, self._properties)[prop.name] = prop

    def add_event(self, thing: str, event: EventMetadata) -> None:
        """Declare an event of a Thing, with the DataShape of its event data.

        Raises:
            RegistryError: the Thing is unknown, the name is bad or declared already.
        """
        self._declare(thing, "event", event.name, self._events)[event.name] = event

    def _declare(
        self, thing: str, kind: str, name: str, table: dict[str, dict[str, _D]]
    ) -> dict[str, _D]:
        if thing not in self._things:
            raise RegistryError(f"unknown Thing {thing!r}: add_thing() it first")
        _check_name(kind, name)
        declared = table.setdefault(thing, {})
        if name in declared:
            raise RegistryError(f"Thing {thing!r} already has a {kind} {name!r}")
        return declared

    def properties(self, thing: str) -> list[PropertyMetadata]:
        """The remote properties declared on ``thing`` (none for an unknown Thing)."""
        return list(self._properties.get(thing, {}).values())

    def events(self, thing: str) -> list[EventMetadata]:
        """The events declared on ``thing`` (none for an unknown Thing)."""
        return list(self._events.get(thing, {}).values())

    def things(self) -> list[str]:
        """The Thing names, in the order they were added."""
        return list(self._things)

    def services(self, thing: str) -> list[RemoteService]:
        """The services of a Thing, built-ins first.

        Raises:
            KeyError: unknown Thing.
        """
        return list(self._things[thing].values())

    def lookup(self, thing: str, service: str) -> RemoteService | None:
        """The service ``service`` of ``thing``, or None when either is unknown."""
        return self._things.get(thing, {}).get(service)

    def metadata(self, thing: str) -> dict[str, Any]:
        """The GetMetadata JSON of a Thing (reference §7.4).

        Raises:
            KeyError: unknown Thing.
        """
        return metadata_json(
            thing,
            (
                ServiceMetadata(s.name, s.description, s.inputs, s.result_type, s.result_shape)
                for s in self._things[thing].values()
            ),
            properties=self.properties(thing),
            events=self.events(thing),
        )

    async def _get_metadata(self, call: ServiceCall) -> dict[str, Any]:
        return self.metadata(call.thing)

    # -- dispatch -----------------------------------------------------------------------------

    async def dispatch(
        self,
        thing: str,
        service: str,
        params: InfoTable | None,
        *,
        log: FilteringBoundLogger | None = None,
        user: str = "",
    ) -> InfoTable | None:
        """Validate the inputs, run the handler under its deadline and shape its result; hand
        the call of an audited service to :attr:`recorder`.

        Args:
            thing: the Thing the call is for.
            service: the service name.
            params: the input InfoTable (its first row holds the inputs) or None.
            log: a logger to bind the call's context to (e.g. the connection's).
            user: the calling user, when the platform names one.

        Returns:
            The result InfoTable (a primitive wrapped in the one-row ``result`` table), or None
            for a NOTHING result.

        Raises:
            ServiceError: NOT_FOUND for an unknown Thing or service; BAD_REQUEST naming the
                input for an unknown input, a wrong base type or a missing required input;
                GATEWAY_TIMEOUT when the deadline passes; the handler's own ServiceError;
                INTERNAL_SERVER_ERROR for anything unexpected (logged with its traceback).
        """
        if thing not in self._things:
            raise ServiceError(f"Thing {thing} is not bound to this agent", Status.NOT_FOUND)
        declared = self._things[thing].get(service)
        if declared is None:
            hint = _did_you_mean(service, self._things[thing])
            raise ServiceError(f"Thing {thing} has no service {service}{hint}", Status.NOT_FOUND)
        call_id = next(self._call_ids)
        base = log if log is not None else self._log
        call_log: FilteringBoundLogger = base.bind(thing=thing, service=service, call_id=call_id)
        if declared.audit_action is None or self.recorder is None:
            inputs = _validate_inputs(declared, params)
            return await self._run(declared, thing, inputs, call_log, call_id, user)
        try:
            inputs = _validate_inputs(declared, params)
        except ServiceError as exc:
            self._record(declared, thing, user, _given_cells(params), None, exc, call_log)
            raise
        try:
            result = await self._run(declared, thing, inputs, call_log, call_id, user)
        except ServiceError as exc:
            self._record(declared, thing, user, inputs, None, exc, call_log)
            raise
        except asyncio.CancelledError:
            # Cut off (the agent stopping past its drain deadline): what it did is unknown.
            unknown = ServiceError(
                f"service {service} was cut off before it answered (the agent was stopping); "
                "its effect is unknown: look before retrying (GetJob, FindJobs, GetRollout)",
                Status.SERVICE_UNAVAILABLE,
            )
            self._record(declared, thing, user, inputs, None, unknown, call_log)
            raise
        self._record(declared, thing, user, inputs, result, None, call_log)
        return result

    async def _run(
        self,
        declared: RemoteService,
        thing: str,
        inputs: dict[str, Any],
        call_log: FilteringBoundLogger,
        call_id: int,
        user: str,
    ) -> InfoTable | None:
        """Run the handler on valid inputs under the service's deadline; shape its result."""
        service = declared.name
        timeout = declared.timeout if declared.timeout is not None else self._default_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        call = ServiceCall(thing, service, inputs, deadline, call_log, user)
        try:
            async with asyncio.timeout_at(deadline) as scope:
                value = await declared.handler(call)
        except ServiceError:
            raise
        except TimeoutError:
            if scope.expired():
                call_log.warning("service deadline passed", timeout=timeout)
                raise ServiceError(
                    f"service {service} did not finish within {timeout:g} s",
                    Status.GATEWAY_TIMEOUT,
                ) from None
            raise self._internal(call_log, service, call_id) from None
        except Exception:
            raise self._internal(call_log, service, call_id) from None
        return _shape_result(declared, value, call_log, call_id)

    def _record(
        self,
        declared: RemoteService,
        thing: str,
        user: str,
        inputs: Mapping[str, Any],
        result: InfoTable | None,
        error: ServiceError | None,
        log: FilteringBoundLogger,
    ) -> None:
        recorder = self.recorder
        if recorder is None or declared.audit_action is None:
            return
        record = CallRecord(
            thing, declared.name, declared.audit_action, user, inputs, result, error
        )
        try:
            recorder.record(record)
        except Exception:
            log.exception("call not recorded: the recorder failed")

    @staticmethod
    def _internal(log: FilteringBoundLogger, service: str, call_id: int) -> ServiceError:
        log.exception("service failed unexpectedly")
        return ServiceError(
            f"internal error in service {service} (call {call_id}); the agent log has the details",
            Status.INTERNAL_SERVER_ERROR,
        )


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean X?"`` naming the closest of ``known``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _notify_property_update(call: ServiceCall) -> None:
    # The agent's Things have no remote properties: nothing to re-synchronise (reference §7.2).
    return None


def _given_cells(params: InfoTable | None) -> dict[str, Any]:
    """The cells a caller sent, as they came (what a refused call is recorded with)."""
    if params is None or not params.rows:
        return {}
    row = params.first_row()
    return {name: row.get(name) for name in params.shape.names if row.get(name) is not None}


def _validate_inputs(declared: RemoteService, params: InfoTable | None) -> dict[str, Any]:
    """The call's typed inputs, defaults applied; BAD_REQUEST ServiceError naming the input."""
    name = declared.name
    given: dict[str, Any] = {}
    if params is not None:
        row = params.first_row()
        for column in params.shape:
            if column.name not in declared.inputs:
                expected = ", ".join(declared.inputs.names) or "none"
                hint = _did_you_mean(column.name, declared.inputs.names)
                raise ServiceError(
                    f"unknown input {column.name} for service {name}{hint}; its inputs are: "
                    f"{expected}"
                )
            value = _typed_cell(declared, declared.inputs.field(column.name), column, row)
            if value is not None:
                given[column.name] = value
    for f in declared.inputs:
        if f.name in given:
            continue
        default = f.aspects.get(DEFAULT_VALUE_ASPECT)
        if default is not None:
            given[f.name] = default
        elif f.aspects.get(IS_REQUIRED_ASPECT, False):
            raise ServiceError(
                f"missing required input {f.name} ({f.base_type.type_name}) of service {name}"
            )
    return given


def _typed_cell(
    declared: RemoteService, want: FieldDefinition, column: FieldDefinition, row: dict[str, Any]
) -> Any:
    """The value of one input cell as the declared type, or None when the cell is NOTHING."""
    value = row.get(column.name)
    cell_type = column.base_type
    if isinstance(value, Variant):
        cell_type, value = BaseType(value.base_type), value.value
    if value is None or cell_type is BaseType.NOTHING:
        return None
    expected = want.base_type
    if cell_type is not expected and cell_type not in ACCEPTED_INPUT_TYPES.get(
        expected, frozenset()
    ):
        article = "an" if expected.type_name[0] in "AEIOU" else "a"
        raise ServiceError(
            f"input {want.name} of service {declared.name} must be {article} "
            f"{expected.type_name}; got {cell_type.type_name} {_shown(value)}"
        )
    if (
        expected is BaseType.NUMBER
        and cell_type is BaseType.LONG
        and isinstance(value, int)
        and abs(value) > _TWO_TO_53
    ):
        raise ServiceError(
            f"input {want.name} of service {declared.name}: {value} does not fit a NUMBER exactly"
        )
    try:
        return coerce_value(expected, value)
    except AlwaysOnError as exc:
        raise ServiceError(f"input {want.name} of service {declared.name}: {exc}") from None


def _shape_result(
    declared: RemoteService, value: Any, log: FilteringBoundLogger, call_id: int
) -> InfoTable | None:
    """Wrap the handler's value as the wire result (reference §4, §7.5)."""
    result_type = declared.result_type
    if result_type is BaseType.NOTHING:
        if value is not None:
            log.warning("service returned a value for a NOTHING result; dropped")
        return None
    if isinstance(value, InfoTable):
        return value
    if result_type is BaseType.INFOTABLE:
        if value is None:
            return InfoTable(declared.result_shape or _EMPTY_SHAPE, [])
        log.error("service returned a non-InfoTable result", returned=type(value).__name__)
        raise ServiceError(
            f"internal error in service {declared.name} (call {call_id}): it returned "
            f"{type(value).__name__} instead of an InfoTable",
            Status.INTERNAL_SERVER_ERROR,
        )
    try:
        return InfoTable.single(RESULT_FIELD, result_type, value)
    except AlwaysOnError as exc:
        log.error("service result does not fit its base type", error=str(exc))
        raise ServiceError(
            f"internal error in service {declared.name} (call {call_id}): its result is not "
            f"a valid {result_type.type_name}",
            Status.INTERNAL_SERVER_ERROR,
        ) from None
