"""The calling user, when a service request names one in its headers (reference §5.1; the header
name is an unconfirmed point: ``SERVICE_CALL_USER_HEADER``), reaches the registry's recorder
through the real channel; without it the user is empty."""

from __future__ import annotations

from agent.alwayson import BaseType, DataShape, FieldDefinition, Status
from agent.alwayson.unconfirmed import SERVICE_CALL_USER_HEADER
from agent.channel import AlwaysOnClient
from agent.registry import CallRecord, RemoteService, ServiceCall
from tests.agent.channel.miniserver import MiniServer
from tests.support.channel import GATEWAY, make_registry, running, settings, text_params


class Kept:
    """A recorder that keeps the records (the audit log's seam, without a store)."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def record(self, call: CallRecord) -> None:
        self.records.append(call)


async def change(call: ServiceCall) -> str:
    return f"changed by {call.user or 'nobody named'}"


async def test_the_user_header_is_the_calls_user_and_its_absence_is_empty() -> None:
    registry = make_registry()
    text = DataShape.of(FieldDefinition("text", BaseType.STRING))
    registry.add_service(
        GATEWAY,
        RemoteService("Change", "", text, BaseType.STRING, None, change, audit_action="change"),
    )
    kept = Kept()
    registry.recorder = kept
    async with MiniServer() as server, running(AlwaysOnClient(settings(server.url), registry)):
        await server.wait_link(1)
        named = await server.call(
            GATEWAY,
            "Change",
            text_params("a"),
            headers=(("x-other", "1"), (SERVICE_CALL_USER_HEADER, "alice")),
        )
        anonymous = await server.call(GATEWAY, "Change", text_params("b"))
        await server.call(GATEWAY, "Echo", text_params("c"), headers=(("user", "bob"),))
    assert named.status is Status.SUCCESS and anonymous.status is Status.SUCCESS
    assert [(r.service, r.user, dict(r.inputs)) for r in kept.records] == [
        ("Change", "alice", {"text": "a"}),
        ("Change", "", {"text": "b"}),
    ]  # Echo declares no audit_action: not recorded
