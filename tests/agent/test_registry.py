"""The registry: declarations, input validation, defaults, deadlines, result shaping, metadata."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import structlog
import structlog.testing

from agent.alwayson import (
    BaseType,
    DataShape,
    FieldDefinition,
    InfoTable,
    Status,
    Variant,
)
from agent.registry import (
    GET_METADATA,
    NOTIFY_PROPERTY_UPDATE,
    RegistryError,
    RemoteService,
    ServiceCall,
    ServiceError,
    ThingRegistry,
)
from agent.settings import JobSettings

F = FieldDefinition
EMPTY = DataShape(())


def params(*cells: tuple[str, BaseType, Any]) -> InfoTable:
    shape = DataShape(tuple(F(name, bt) for name, bt, _ in cells))
    return InfoTable(shape, [{name: value for name, _, value in cells}])


class Recorder:
    """A handler that records its calls and returns a fixed value."""

    def __init__(self, result: Any = None) -> None:
        self.calls: list[ServiceCall] = []
        self.result = result

    async def __call__(self, call: ServiceCall) -> Any:
        self.calls.append(call)
        return self.result


ECHO_INPUTS = DataShape.of(
    F("name", BaseType.STRING, "who", {"isRequired": True}),
    F("count", BaseType.INTEGER, "how many", {"defaultValue": 3}),
    F("ratio", BaseType.NUMBER),
    F("big", BaseType.LONG),
    F("doc", BaseType.JSON),
)


def make_registry(
    result: Any = 42,
    result_type: BaseType = BaseType.INTEGER,
    timeout: float | None = None,
    call_deadline: float = 60.0,
) -> tuple[ThingRegistry, Recorder]:
    registry = ThingRegistry(JobSettings(call_deadline=call_deadline))
    registry.add_thing("Gw")
    handler = Recorder(result)
    registry.add_service(
        "Gw",
        RemoteService("Echo", "echo it", ECHO_INPUTS, result_type, None, handler, timeout),
    )
    return registry, handler


async def test_inputs_typed_with_defaults_and_primitive_result_wrapped() -> None:
    registry, handler = make_registry()
    out = await registry.dispatch("Gw", "Echo", params(("name", BaseType.STRING, "x")))
    assert out == InfoTable.single("result", BaseType.INTEGER, 42)
    (call,) = handler.calls
    assert call.inputs == {"name": "x", "count": 3}
    assert call.thing == "Gw" and call.service == "Echo"
    assert 59 < call.deadline - asyncio.get_running_loop().time() <= 60


async def test_unknown_input_is_refused_naming_it() -> None:
    registry, handler = make_registry()
    with pytest.raises(ServiceError) as info:
        await registry.dispatch(
            "Gw", "Echo", params(("name", BaseType.STRING, "x"), ("colour", BaseType.STRING, "r"))
        )
    assert info.value.status is Status.BAD_REQUEST
    assert "colour" in info.value.message and "Echo" in info.value.message
    assert not handler.calls


async def test_missing_required_input_is_refused_naming_it() -> None:
    registry, _ = make_registry()
    for given in (
        None,
        params(("count", BaseType.INTEGER, 1)),
        params(("name", BaseType.STRING, None)),
    ):
        with pytest.raises(ServiceError) as info:
            await registry.dispatch("Gw", "Echo", given)
        assert info.value.status is Status.BAD_REQUEST
        assert info.value.message == "missing required input name (STRING) of service Echo"


async def test_wrong_base_type_is_refused_naming_both_types() -> None:
    registry, _ = make_registry()
    with pytest.raises(ServiceError) as info:
        await registry.dispatch(
            "Gw", "Echo", params(("name", BaseType.STRING, "x"), ("count", BaseType.STRING, "4"))
        )
    assert info.value.status is Status.BAD_REQUEST
    assert info.value.message == 'input count of service Echo must be an INTEGER; got STRING "4"'
    # A cell whose type byte differs from its column comes back as a Variant: checked the same.
    with pytest.raises(ServiceError, match="must be an INTEGER; got BOOLEAN True"):
        await registry.dispatch(
            "Gw",
            "Echo",
            params(
                ("name", BaseType.STRING, "x"),
                ("count", BaseType.INTEGER, Variant(BaseType.BOOLEAN, True)),
            ),
        )


async def test_accepted_cell_types_variant_and_integer_widening() -> None:
    registry, handler = make_registry()
    await registry.dispatch(
        "Gw",
        "Echo",
        params(
            ("name", BaseType.VARIANT, Variant(BaseType.STRING, "v")),
            ("count", BaseType.INTEGER, Variant(BaseType.NOTHING, None)),
            ("ratio", BaseType.INTEGER, 2),
            ("big", BaseType.INTEGER, 7),
            ("doc", BaseType.JSON, {"a": [1]}),
        ),
    )
    inputs = handler.calls[0].inputs
    assert inputs == {"name": "v", "count": 3, "ratio": 2.0, "big": 7, "doc": {"a": [1]}}
    assert isinstance(inputs["ratio"], float)
    with pytest.raises(ServiceError, match="does not fit a NUMBER exactly"):
        await registry.dispatch(
            "Gw", "Echo", params(("name", BaseType.STRING, "x"), ("ratio", BaseType.LONG, 2**60))
        )


async def test_unknown_thing_and_service_are_not_found() -> None:
    registry, _ = make_registry()
    with pytest.raises(ServiceError) as info:
        await registry.dispatch("Nope", "Echo", None)
    assert info.value.status is Status.NOT_FOUND and "Nope" in info.value.message
    with pytest.raises(ServiceError) as info:
        await registry.dispatch("Gw", "Nope", None)
    assert info.value.status is Status.NOT_FOUND and "Nope" in info.value.message


async def test_deadline_gives_gateway_timeout() -> None:
    registry = ThingRegistry(JobSettings(call_deadline=0.05))
    registry.add_thing("Gw")

    async def slow(call: ServiceCall) -> None:
        await asyncio.sleep(10)

    registry.add_service(
        "Gw", RemoteService("Slow", "", DataShape(()), BaseType.NOTHING, None, slow)
    )
    registry.add_service(
        "Gw", RemoteService("Slower", "", DataShape(()), BaseType.NOTHING, None, slow, timeout=0.1)
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceError) as info:
        await registry.dispatch("Gw", "Slow", None)
    assert info.value.status is Status.GATEWAY_TIMEOUT
    assert info.value.message == "service Slow did not finish within 0.05 s"
    assert loop.time() - started < 1
    with pytest.raises(ServiceError, match=r"did not finish within 0\.1 s"):
        await registry.dispatch("Gw", "Slower", None)


async def test_handler_service_error_passes_through() -> None:
    registry = ThingRegistry(JobSettings())
    registry.add_thing("Gw")

    async def refuse(call: ServiceCall) -> None:
        raise ServiceError("hub says no:\nwait a minute", Status.SERVICE_UNAVAILABLE)

    registry.add_service(
        "Gw", RemoteService("Refuse", "", DataShape(()), BaseType.NOTHING, None, refuse)
    )
    with pytest.raises(ServiceError) as info:
        await registry.dispatch("Gw", "Refuse", None)
    assert info.value.status is Status.SERVICE_UNAVAILABLE
    assert info.value.message == "hub says no: wait a minute"


@pytest.mark.parametrize(
    "exc", [KeyError("secret\ndetail"), TimeoutError(), RuntimeError("x\n  File 'a.py'")]
)
async def test_unexpected_exception_becomes_one_line_internal_error(exc: Exception) -> None:
    registry = ThingRegistry(JobSettings())
    registry.add_thing("Gw")

    async def broken(call: ServiceCall) -> None:
        raise exc

    registry.add_service(
        "Gw", RemoteService("Broken", "", DataShape(()), BaseType.NOTHING, None, broken)
    )
    with pytest.raises(ServiceError) as info:
        await registry.dispatch("Gw", "Broken", None)
    error = info.value
    assert error.status is Status.INTERNAL_SERVER_ERROR
    assert "\n" not in error.message and "Traceback" not in error.message
    assert "secret" not in error.message and "File" not in error.message
    assert error.message.startswith("internal error in service Broken (call ")
    assert error.__cause__ is None and error.__suppress_context__


async def test_result_shaping() -> None:
    shape = DataShape.of(F("a", BaseType.STRING), name="Shape")
    table = InfoTable(shape, [{"a": "x"}])
    registry, _ = make_registry(result=table, result_type=BaseType.INFOTABLE)
    assert await registry.dispatch("Gw", "Echo", params(("name", BaseType.STRING, "x"))) is table

    registry, _ = make_registry(result=None, result_type=BaseType.NOTHING)
    assert await registry.dispatch("Gw", "Echo", params(("name", BaseType.STRING, "x"))) is None

    registry, _ = make_registry(result="not a number", result_type=BaseType.NUMBER)
    with pytest.raises(ServiceError) as info:
        await registry.dispatch("Gw", "Echo", params(("name", BaseType.STRING, "x")))
    assert info.value.status is Status.INTERNAL_SERVER_ERROR
    assert "not a valid NUMBER" in info.value.message

    registry, _ = make_registry(result=[1], result_type=BaseType.INFOTABLE)
    with pytest.raises(ServiceError, match="instead of an InfoTable"):
        await registry.dispatch("Gw", "Echo", params(("name", BaseType.STRING, "x")))


async def test_builtins_on_every_thing() -> None:
    registry, _ = make_registry()
    registry.add_thing("Dev1")
    assert registry.things() == ["Gw", "Dev1"]
    assert [s.name for s in registry.services("Dev1")] == [GET_METADATA, NOTIFY_PROPERTY_UPDATE]
    assert registry.lookup("Gw", "Echo") is not None
    assert registry.lookup("Dev1", "Echo") is None
    assert await registry.dispatch("Dev1", NOTIFY_PROPERTY_UPDATE, None) is None
    # NotifyPropertyUpdate may come with an empty table rather than NOTHING (reference §7.2).
    assert await registry.dispatch("Dev1", NOTIFY_PROPERTY_UPDATE, InfoTable(DataShape(()))) is None
    out = await registry.dispatch("Gw", GET_METADATA, None)
    assert out is not None and out.shape.field("result").base_type is BaseType.JSON
    document = out.first_row()["result"]
    if isinstance(document, str):
        document = json.loads(document)
    assert document == registry.metadata("Gw")


def test_metadata_json_shape() -> None:
    registry, _ = make_registry()
    meta = registry.metadata("Gw")
    assert meta["name"] == "Gw"
    services = meta["serviceDefinitions"]
    assert set(services) == {GET_METADATA, NOTIFY_PROPERTY_UPDATE, "Echo"}
    echo = services["Echo"]
    assert echo["name"] == "Echo" and echo["description"] == "echo it"
    fields = echo["Inputs"]["fieldDefinitions"]
    assert list(fields) == ["name", "count", "ratio", "big", "doc"]
    assert fields["name"]["baseType"] == "STRING"
    assert fields["name"]["aspects"]["isRequired"] is True
    assert fields["count"]["aspects"]["defaultValue"] == 3
    assert echo["Outputs"]["baseType"] == "INTEGER" and echo["Outputs"]["name"] == "result"
    assert services[GET_METADATA]["Outputs"]["baseType"] == "JSON"
    assert services[NOTIFY_PROPERTY_UPDATE]["Outputs"]["baseType"] == "NOTHING"
    json.dumps(meta)  # serialisable as is


def test_declaration_mistakes_are_refused() -> None:
    registry = ThingRegistry(JobSettings())

    async def nothing(call: ServiceCall) -> None:
        return None

    def svc(inputs: DataShape = EMPTY, **kw: Any) -> RemoteService:
        return RemoteService(
            kw.pop("name", "S"),
            "",
            inputs,
            kw.pop("rt", BaseType.NOTHING),
            kw.pop("shape", None),
            nothing,
            **kw,
        )

    with pytest.raises(RegistryError, match="unknown Thing"):
        registry.add_service("Gw", svc())
    with pytest.raises(RegistryError, match=r"1\.\.127"):
        registry.add_thing("x" * 128)
    registry.add_thing("Gw")
    registry.add_thing("Gw")  # idempotent
    registry.add_service("Gw", svc())
    with pytest.raises(RegistryError, match="already has"):
        registry.add_service("Gw", svc())
    with pytest.raises(RegistryError, match="already has"):
        registry.add_service("Gw", svc(name=GET_METADATA))
    with pytest.raises(RegistryError, match="defaultValue"):
        svc(DataShape.of(F("n", BaseType.INTEGER, "", {"defaultValue": "three"})))
    with pytest.raises(RegistryError, match="isRequired"):
        svc(DataShape.of(F("n", BaseType.INTEGER, "", {"isRequired": "yes"})))
    with pytest.raises(RegistryError, match="result_shape"):
        svc(shape=DataShape(()))
    with pytest.raises(RegistryError, match="timeout"):
        svc(timeout=0)
    # Defaults are typed as their field: an int default of a NUMBER input becomes a float.
    typed = svc(DataShape.of(F("r", BaseType.NUMBER, "", {"defaultValue": 2})))
    assert typed.inputs.field("r").aspects["defaultValue"] == 2.0
    assert isinstance(typed.inputs.field("r").aspects["defaultValue"], float)


async def test_call_log_is_bound_with_context() -> None:
    registry = ThingRegistry(JobSettings())
    registry.add_thing("Gw")

    async def chatty(call: ServiceCall) -> None:
        call.log.info("working")

    async def broken(call: ServiceCall) -> None:
        raise ValueError("boom")

    for name, handler in (("Chatty", chatty), ("Broken", broken)):
        registry.add_service("Gw", RemoteService(name, "", EMPTY, BaseType.NOTHING, None, handler))
    with structlog.testing.capture_logs() as logs:
        await registry.dispatch("Gw", "Chatty", None)
        await registry.dispatch("Gw", "Chatty", None, log=structlog.get_logger().bind(conn_id=7))
        with pytest.raises(ServiceError):
            await registry.dispatch("Gw", "Broken", None)
    first, second, failure = logs
    assert first["event"] == "working" and first["thing"] == "Gw"
    assert first["service"] == "Chatty" and first["call_id"] == 1
    assert second["call_id"] == 2 and second["conn_id"] == 7
    # The traceback goes to the log (exc_info), not to the caller.
    assert failure["event"] == "service failed unexpectedly" and failure["exc_info"] is True
    assert failure["call_id"] == 3


def test_equal_input_declarations_share_one_shape() -> None:
    """The same service declared on many Things keeps one normalised DataShape (memory grows
    with the distinct declarations, not with the Things), while declarations that differ in
    anything — a default's type included — stay apart."""
    from agent.alwayson import FieldDefinition
    from agent.registry import _INTERNED

    async def handler(_call: ServiceCall) -> str:
        return ""

    def declared(default: Any) -> RemoteService:
        inputs = DataShape.of(
            FieldDefinition("jobId", BaseType.STRING, "the job", {"isRequired": True}),
            FieldDefinition("n", BaseType.NUMBER, "a number", {"defaultValue": default}),
        )
        return RemoteService("Svc", "a service", inputs, BaseType.STRING, None, handler)

    first, second = declared(1.5), declared(1.5)
    assert first.inputs is second.inputs
    assert first.inputs.fields[0] is second.inputs.fields[0]
    assert declared(2.5).inputs is not first.inputs
    assert declared(2.5).inputs.fields[0] is first.inputs.fields[0]  # the jobId field is shared
    # 1 == True == 1.0 and 0.0 == -0.0 in Python, but not on the wire: kept apart.
    variants = [
        _INTERNED.field(FieldDefinition("v", BaseType.VARIANT, "", {"defaultValue": value}))
        for value in (1, True, 1.0, 0.0, -0.0)
    ]
    assert len({id(v) for v in variants}) == 5
    assert [type(v.aspects["defaultValue"]) for v in variants] == [int, bool, float, float, float]


def test_interned_shapes_are_evicted_least_recently_used_first() -> None:
    """A shape found again counts as used: the bound drops the one unused longest."""
    from agent.alwayson import FieldDefinition
    from agent.registry import _Interner

    interner = _Interner(2)

    def shape(name: str) -> DataShape:
        return interner.shape(name, (interner.field(FieldDefinition("x", BaseType.STRING)),))

    a, b = shape("A"), shape("B")
    assert shape("A") is a  # A is now the most recently used
    shape("C")  # over the bound: B goes, A stays
    assert shape("A") is a
    assert shape("B") is not b
