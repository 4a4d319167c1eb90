"""ThingWorx's REST convention on the stand-in: typed inputs, InfoTable JSON out, error statuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from agent.alwayson import (
    BaseType,
    DataShape,
    FieldDefinition,
    InfoTable,
    Request,
    Response,
    ServiceMetadata,
    Status,
)
from agent.alwayson.messagecodec import HEADER, MULTIPART_HEADER
from emulator.thingworx.server import ThingWorxStandIn
from tests.emulator.thingworx.conftest import APP_KEY, EdgeFactory
from tests.emulator.thingworx.csdk_edge import CsdkEdge
from tests.support.channel import EVERY_TYPE

F = FieldDefinition
ALL_INPUTS = EVERY_TYPE
ALL_TYPES = ServiceMetadata("AllTypes", "", ALL_INPUTS, BaseType.INFOTABLE, ALL_INPUTS)


def _reply(
    edge: CsdkEdge,
    request: Request,
    status: Status = Status.SUCCESS,
    *,
    reason: str | None = None,
    content: InfoTable | None = None,
) -> Response:
    return Response(
        status, request.request_id, request.endpoint_id, edge.session_id, reason, content
    )


@pytest.fixture
async def edge(standin: ThingWorxStandIn, connect_edge: EdgeFactory) -> CsdkEdge:
    edge = await connect_edge()
    seen: list[Request] = []
    edge.seen = seen  # type: ignore[attr-defined]

    def all_types(request: Request) -> Response:
        seen.append(request)
        return _reply(edge, request, content=request.params)

    def failing(kind: str) -> Any:
        def handler(request: Request) -> Response:
            if kind == "header":
                return _reply(edge, request, Status.INTERNAL_SERVER_ERROR, reason="disk full")
            if kind == "column":  # the C SDK quirk of §12: reason in a column, marker 0
                table = InfoTable.single("reason", BaseType.STRING, "device offline")
                return _reply(edge, request, Status.BAD_REQUEST, content=table)
            return _reply(edge, request, Status.NOT_FOUND)

        return handler

    async def never(request: Request) -> Response:
        await asyncio.sleep(3600)
        raise AssertionError

    none = DataShape(())
    edge.add_service(ALL_TYPES, all_types)
    for name, kind in (("FailHeader", "header"), ("FailColumn", "column"), ("Gone", "nf")):
        edge.add_service(ServiceMetadata(name, "", none, BaseType.NOTHING), failing(kind))
    edge.add_service(ServiceMetadata("Never", "", none, BaseType.NOTHING), never)
    edge.serve()
    assert (await edge.bind("Gw1")).ok
    await standin.wait_metadata("Gw1", 3)
    return edge


async def _post(
    http: aiohttp.ClientSession, standin: ThingWorxStandIn, service: str, body: Any, **kw: Any
) -> tuple[int, Any]:
    url = f"{standin.rest_url}/Things/Gw1/Services/{service}"
    async with http.post(url, json=body, headers={"Accept": "application/json"}, **kw) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, (await r.text()).strip()


INFOTABLE_INPUT = {
    "dataShape": {
        "fieldDefinitions": {
            "k": {"name": "k", "baseType": "STRING"},
            "v": {"name": "v", "baseType": "NUMBER"},
        }
    },
    "rows": [{"k": "a", "v": 1}, {"k": "b", "v": 2.5}],
}


async def test_inputs_are_typed_from_the_metadata(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    body = {
        "s": "text",
        "n": 4,
        "i": 4,
        "l": 2**40,
        "b": True,
        "d": "2024-05-06T07:08:09.123Z",
        "j": {"a": [1, 2]},
        "t": INFOTABLE_INPUT,
    }
    status, result = await _post(http, standin, "AllTypes", body)
    assert status == 200, result
    (request,) = edge.seen  # type: ignore[attr-defined]
    assert request.params is not None
    assert request.params.shape == ALL_INPUTS
    row = request.params.rows[0]
    assert row["n"] == 4.0 and isinstance(row["n"], float)
    assert row["i"] == 4 and isinstance(row["i"], int)
    assert row["l"] == 2**40
    assert row["d"] == datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    assert row["j"] == {"a": [1, 2]}
    assert row["t"].rows == [{"k": "a", "v": 1.0}, {"k": "b", "v": 2.5}]
    # On the wire: "n" is a NUMBER cell (01 + double 4.0), "i" an INTEGER cell (16 + int32 4).
    wire = b"".join(f.payload for f in edge.sock.frames if f.payload[1] == 0x03)
    assert bytes.fromhex("01 40 10 00 00 00 00 00 00") in wire
    assert bytes.fromhex("16 00 00 00 04") in wire
    # The result is ThingWorx InfoTable JSON; DATETIME as epoch milliseconds.
    fields = result["dataShape"]["fieldDefinitions"]
    assert list(fields) == list(ALL_INPUTS.names)
    assert fields["d"] == {
        "name": "d", "baseType": "DATETIME", "description": "", "aspects": {}, "ordinal": 5,
    }  # fmt: skip
    (out,) = result["rows"]
    assert out["d"] == 1714979289123
    assert out["n"] == 4.0 and out["i"] == 4 and out["b"] is True and out["j"] == {"a": [1, 2]}
    assert out["t"]["rows"] == [{"k": "a", "v": 1.0}, {"k": "b", "v": 2.5}]


async def test_lenient_forms_and_absent_inputs(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    body = {"n": "2.5", "i": 7.0, "b": "false", "d": 1000, "j": '{"x": 1}', "s": None}
    status, result = await _post(http, standin, "AllTypes", body)
    assert status == 200, result
    row = edge.seen[0].params.rows[0]  # type: ignore[attr-defined]
    assert row["n"] == 2.5 and row["i"] == 7 and row["b"] is False and row["j"] == {"x": 1}
    assert row["d"] == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert result["rows"][0]["l"] is None and result["rows"][0]["s"] is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"bogus": 1}, "no input 'bogus'"),
        ({"i": 2**40}, "input i must be an INTEGER; got 1099511627776 ("),
        ({"i": 1.5}, "input i must be an INTEGER; got 1.5"),
        ({"b": "maybe"}, 'input b must be a BOOLEAN; got "maybe"'),
        ({"n": True}, "input n must be a NUMBER; got true"),
        ({"d": "yesterday"}, 'input d must be a DATETIME; got "yesterday"'),
        ({"t": {"rows": "x"}}, "input t: rows must be a list"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_inputs_are_400_naming_the_input(
    standin: ThingWorxStandIn,
    edge: CsdkEdge,
    http: aiohttp.ClientSession,
    body: Any,
    needle: str,
) -> None:
    status, text = await _post(http, standin, "AllTypes", body)
    assert status == 400 and needle in text
    assert edge.seen == []  # type: ignore[attr-defined]


def _nested_tables(levels: int) -> dict[str, Any]:
    """InfoTable JSON ``levels`` tables deep (3 JSON levels per table: within the JSON limit)."""
    table: dict[str, Any] = {"rows": [{"k": "leaf"}]}
    for _ in range(levels - 1):
        table = {
            "dataShape": {"fieldDefinitions": {"t": {"name": "t", "baseType": "INFOTABLE"}}},
            "rows": [{"t": table}],
        }
    return table


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            b"[" * 1_500_000,
            "the body nests arrays and objects more than 256 deep; the stand-in reads at most "
            "256 levels (send a JSON object of inputs)",
        ),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "the body nests arrays and objects more than 256 deep; the stand-in reads at most "
            "256 levels (send a JSON object of inputs)",
        ),
        (
            json.dumps({"j": "[" * 100_000 + "]" * 100_000}).encode(),
            "input j nests arrays and objects more than 256 deep; the stand-in reads at most "
            "256 levels",
        ),
        (
            json.dumps({"t": "[" * 100_000}).encode(),
            "input t nests arrays and objects more than 256 deep; the stand-in reads at most "
            "256 levels",
        ),
        (
            json.dumps({"t": _nested_tables(33)}).encode(),
            "input t" + " row 0 't'" * 32 + ": InfoTables nested more than 32 deep",
        ),
        (
            b"{nope",
            "the body is not JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)) (send a JSON object of inputs)",
        ),
        (
            b"\xff\xfe\xff",
            "the body is not JSON text (it is not UTF-8) (send a JSON object of inputs)",
        ),
    ],
)
async def test_hostile_json_is_400_with_one_line(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession, raw: bytes, message: str
) -> None:
    url = f"{standin.rest_url}/Things/Gw1/Services/AllTypes"
    headers = {"appKey": APP_KEY, "Content-Type": "application/json"}
    async with http.post(url, data=raw, headers=headers) as reply:
        assert (reply.status, (await reply.text()).strip()) == (400, message)
    assert edge.seen == []  # type: ignore[attr-defined]
    # The stand-in still answers the next call.
    assert (await _post(http, standin, "AllTypes", {"s": "next"}))[0] == 200


async def test_nesting_up_to_the_limits_is_accepted(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    deep: Any = 1
    for _ in range(255):  # the body object + 255 lists = 256 levels
        deep = [deep]
    status, result = await _post(http, standin, "AllTypes", {"j": deep, "t": _nested_tables(32)})
    assert status == 200, result
    row = edge.seen[0].params.rows[0]  # type: ignore[attr-defined]
    assert row["j"] == deep
    table = row["t"]
    for _ in range(31):
        table = table.rows[0]["t"]
    assert table.rows == [{"k": "leaf"}]


async def test_app_key_is_required_on_every_route(
    standin: ThingWorxStandIn, edge: CsdkEdge
) -> None:
    urls = [
        ("POST", f"{standin.rest_url}/Things/Gw1/Services/AllTypes"),
        ("GET", f"{standin.rest_url}/Things"),
        ("GET", f"{standin.rest_url}/Things/Gw1/ServiceDefinitions"),
    ]
    async with aiohttp.ClientSession() as anon:
        for method, url in urls:
            for headers in ({}, {"appKey": "wrong"}):
                async with anon.request(method, url, json={}, headers=headers) as r:
                    assert r.status == 401
            async with anon.request(method, url, json={}, params={"appKey": APP_KEY}) as r:
                assert r.status == 200


async def test_listings(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{standin.rest_url}/Things") as r:
        things = await r.json()
    assert [(t["name"], t["isConnected"], t["servicesKnown"]) for t in things["rows"]] == [
        ("Gw1", True, True)
    ]
    async with http.get(f"{standin.rest_url}/Things/Gw1/ServiceDefinitions") as r:
        services = {s["name"]: s for s in (await r.json())["rows"]}
    assert {"AllTypes", "GetMetadata", "NotifyPropertyUpdate", "Never"} <= set(services)
    assert list(services["AllTypes"]["parameterDefinitions"]) == list(ALL_INPUTS.names)
    assert services["AllTypes"]["resultType"]["baseType"] == "INFOTABLE"


async def test_unknown_thing_and_service_are_404(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    status, text = await _post(http, standin, "Nope", {})
    assert status == 404 and "no service 'Nope'" in text
    async with http.post(f"{standin.rest_url}/Things/Ghost/Services/X", json={}) as r:
        assert r.status == 404
    async with http.get(f"{standin.rest_url}/Things/Ghost/ServiceDefinitions") as r:
        assert r.status == 404


async def test_edge_errors_map_to_http(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    assert await _post(http, standin, "FailHeader", {}) == (500, "disk full")
    assert await _post(http, standin, "FailColumn", {}) == (400, "device offline")
    assert await _post(http, standin, "Gone", {}) == (404, "NOT_FOUND")


async def test_unreadable_answers_fail_the_call_with_502(
    standin: ThingWorxStandIn, connect_edge: EdgeFactory, http: aiohttp.ClientSession
) -> None:
    edge = await connect_edge()

    def header(request: Request, multipart: int) -> bytes:
        return HEADER.pack(
            1, Status.SUCCESS, request.request_id, request.endpoint_id, edge.session_id, multipart
        )

    def answers_raw(payload: Callable[[Request], bytes]) -> Any:
        async def handler(request: Request) -> Response:
            await edge.sock.send_message(payload(request))
            await asyncio.sleep(3600)
            raise AssertionError

        return handler

    none = DataShape(())
    # Content InfoTable with field definition marker 0x07: does not parse.
    garbled = answers_raw(lambda r: header(r, 0) + b"\x00\x05\x07")
    # A multipart set of 65535 chunks of 65535 bytes: over the 1 MiB max message size.
    huge = answers_raw(lambda r: header(r, 1) + MULTIPART_HEADER.pack(1, 0xFFFF, 0xFFFF) + b"\0")
    edge.add_service(ServiceMetadata("Garbled", "", none, BaseType.NOTHING), garbled)
    edge.add_service(ServiceMetadata("Huge", "", none, BaseType.NOTHING), huge)
    edge.serve()
    assert (await edge.bind("Gw2")).ok
    await standin.wait_metadata("Gw2", 3)
    for service, expected in (
        ("Garbled", "the edge's answer does not parse: bad field definition marker 0x07"),
        ("Huge", "the edge's answer exceeds 1048576 bytes"),
    ):
        started = asyncio.get_running_loop().time()
        async with http.post(f"{standin.rest_url}/Things/Gw2/Services/{service}", json={}) as r:
            assert (r.status, (await r.text()).strip()) == (502, expected)
        assert asyncio.get_running_loop().time() - started < 1.5  # failed at once, no timeout


async def test_edge_timeout_is_504(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    started = asyncio.get_running_loop().time()
    status, text = await _post(http, standin, "Never", {})
    assert status == 504 and "did not answer" in text
    assert asyncio.get_running_loop().time() - started < 4


async def test_disconnected_agent_is_503(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    await edge.close()
    for _ in range(100):
        if not standin.bound_things():
            break
        await asyncio.sleep(0.02)
    status, text = await _post(http, standin, "AllTypes", {})
    assert status == 503 and "not connected" in text


async def test_link_dropped_mid_call_fails_the_caller_at_once(
    standin: ThingWorxStandIn, edge: CsdkEdge, http: aiohttp.ClientSession
) -> None:
    async def drop_soon() -> None:
        await asyncio.sleep(0.2)
        await edge.close()

    dropper = asyncio.create_task(drop_soon())
    started = asyncio.get_running_loop().time()
    status, text = await _post(http, standin, "Never", {})
    await dropper
    assert status == 503 and "disconnected during the call" in text
    assert asyncio.get_running_loop().time() - started < 1.5  # well before the 2 s timeout
