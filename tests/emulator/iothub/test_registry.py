"""The registry as a TwinStore: merge rules, versions, write-through durability, bulk patches."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.iothub.clock import ManualClock
from emulator.iothub.database import Database
from emulator.iothub.errors import HubError
from emulator.iothub.registry import Registry
from iothub_query import And, Condition, parse_condition


class _TagEquals:
    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = key, value

    def matches(self, document: Mapping[str, Any]) -> bool:
        return bool(document.get("tags", {}).get(self.key) == self.value)


def _registry(path: Path) -> tuple[Registry, Database]:
    db = Database(path / "hub.sqlite")
    return Registry(db, ManualClock(), "hub.local"), db


def test_twin_document_shape(tmp_path: Path) -> None:
    reg, _ = _registry(tmp_path)
    reg.create_device("d1")
    twin = reg.get_twin("d1")
    assert list(twin)[:3] == ["deviceId", "etag", "deviceEtag"]
    assert twin["status"] == "enabled" and twin["connectionState"] == "Disconnected"
    assert twin["authenticationType"] == "sas" and twin["capabilities"] == {"iotEdge": False}
    assert twin["properties"] == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    assert "tags" not in twin
    assert reg.twin_properties("d1") == twin["properties"]
    assert reg.hub_host() == "hub.local"


def test_reported_patches_merge_and_delete(tmp_path: Path) -> None:
    reg, _ = _registry(tmp_path)
    reg.create_device("d1")
    assert reg.patch_reported("d1", {"a": {"b": 1, "c": 2}, "x": 1}) == 2
    assert reg.patch_reported("d1", {"a": {"b": None}, "x": None}) == 3
    assert reg.twin_properties("d1")["reported"] == {"a": {"c": 2}, "$version": 3}
    with pytest.raises(HubError) as info:
        reg.patch_reported("ghost", {})
    assert info.value.code == 404001


def test_state_survives_a_new_registry_on_the_same_file(tmp_path: Path) -> None:
    reg, db = _registry(tmp_path)
    reg.create_devices([f"d{n}" for n in range(50)])
    reg.apply_job_patch(["d3", "d4"], {"site": "s"}, {"rate": 2})
    reg.patch_reported("d3", {"fw": 1})
    keys = reg.device_keys("d3")
    owner = reg.owner_key()
    reg.delete_device("d9", '"*"')
    db.close()
    again, _ = _registry(tmp_path)
    assert len(again) == 49 and "d9" not in again
    assert again.device_keys("d3") == keys and again.owner_key() == owner
    assert again.get_twin("d3") == reg.get_twin("d3")


def test_apply_job_patch_returns_pushes_and_skips_unknown(tmp_path: Path) -> None:
    reg, _ = _registry(tmp_path)
    reg.create_devices(["a", "b", "c"])
    pushes = reg.apply_job_patch(["a", "b", "ghost"], {"t": 1}, {"d": 1, "$version": 99})
    assert pushes == {"a": {"d": 1, "$version": 2}, "b": {"d": 1, "$version": 2}}
    assert reg.apply_job_patch(["c"], {"t": 2}, None) == {"c": {}}
    assert reg.select_device_ids(_TagEquals("t", 1)) == ["a", "b"]
    assert reg.select_device_ids(None) == ["a", "b", "c"]


def test_disabled_devices_have_no_keys_and_ids_are_checked(tmp_path: Path) -> None:
    reg, _ = _registry(tmp_path)
    reg.put_device("d1", {"status": "disabled"}, None)
    assert reg.device_keys("d1") is None
    with pytest.raises(HubError) as info:
        reg.put_device("bad/id", {}, None)
    assert info.value.code == 400004


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda inner: st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(patches=st.lists(st.dictionaries(st.sampled_from("abcd"), _json, max_size=3), max_size=4))
def test_desired_patches_follow_merge_patch_rules(
    tmp_path_factory: pytest.TempPathFactory, patches: list[dict[str, Any]]
) -> None:
    reg, db = _registry(tmp_path_factory.mktemp("merge"))
    reg.create_device("d")
    expected: dict[str, Any] = {}
    for patch in patches:
        expected = _reference_merge(expected, patch)
        reg.update_twin("d", {"properties": {"desired": patch}}, None, replace=False)
    desired = reg.get_twin("d")["properties"]["desired"]
    assert {k: v for k, v in desired.items() if k != "$version"} == expected
    db.close()


def _reference_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            base = out.get(key)
            out[key] = _reference_merge(base if isinstance(base, dict) else {}, value)
        else:
            out[key] = value
    return out


class _CountingAnd(And):
    """A real ``AND`` condition that counts the twins it is evaluated on."""

    evaluated: ClassVar[list[str]] = []

    def matches(self, document: Mapping[str, Any]) -> bool:
        _CountingAnd.evaluated.append(document["deviceId"])
        return super().matches(document)


class _Scan:
    """The same condition behind a plain Predicate: the registry must read every twin."""

    def __init__(self, condition: Condition) -> None:
        self.condition = condition

    def matches(self, document: Mapping[str, Any]) -> bool:
        return self.condition.matches(document)


def test_a_wave_condition_builds_only_its_members_twins(tmp_path: Path) -> None:
    """A rollout wave's ``deviceId IN [...]`` job reads its members' twins, not the hub's."""
    reg, _ = _registry(tmp_path)
    reg.create_devices([f"dev-{i:04d}" for i in range(2000)])
    reg.apply_job_patch(["dev-0001", "dev-0007"], {"t": 1}, None)
    parsed = parse_condition(
        "deviceId IN ['dev-0007', 'dev-0001', 'dev-0002', 'ghost'] AND tags.t = 1"
    )
    assert isinstance(parsed, And)
    condition = _CountingAnd(parsed.operands)
    _CountingAnd.evaluated.clear()
    assert reg.select_device_ids(condition) == ["dev-0001", "dev-0007"]
    assert sorted(_CountingAnd.evaluated) == ["dev-0001", "dev-0002", "dev-0007"]


@pytest.mark.parametrize(
    "text",
    [
        "deviceId IN ['d-3', 'd-1', 'ghost']",
        "DEVICEID IN ['d-3', 'd-1']",
        "deviceId = 'd-2'",
        "'d-2' = deviceid",
        "deviceId = 5",
        "deviceId IN [1, 'd-4', null]",
        "'d-2' = deviceId AND tags.t = 1",
        "deviceId IN ['d-1', 'd-2'] AND deviceId IN ['d-2', 'd-3']",
        "deviceId IN [1, true, null, 'd-4']",
        "deviceId NIN ['d-1']",
        "deviceId IN ['d-1'] OR tags.t = 1",
        "NOT (deviceId IN ['d-1'])",
        "tags.t = 1",
    ],
)
def test_selection_by_key_equals_the_scan(tmp_path: Path, text: str) -> None:
    """Exact id lists (the first ones: no twin built), pinned ones, and the rest."""
    reg, _ = _registry(tmp_path)
    reg.create_devices([f"d-{i}" for i in range(6)])
    reg.apply_job_patch(["d-2", "d-5"], {"t": 1}, None)
    condition = parse_condition(text)
    expected = reg.select_device_ids(_Scan(condition))
    assert reg.select_device_ids(condition) == expected


def test_a_twin_cut_to_every_name_is_the_whole_twin(tmp_path: Path) -> None:
    """The members a query reads are built by a table of their own: it must build the twin."""
    reg, _ = _registry(tmp_path)
    reg.create_devices(["plain", "full"])
    reg.apply_job_patch(["full"], {"site": {"a": [1, {"b": 2}]}}, {"rate": 5})
    reg.patch_reported("full", {"fw": "1.0"})
    reg.put_device("full", {"deviceId": "full", "status": "disabled", "statusReason": "r"}, "*")
    for device_id in ("plain", "full"):
        whole = reg.twin_doc(device_id)
        assert whole is not None
        names = frozenset(name.lower() for name in whole)
        cut = reg.twin_doc(device_id, names | {"statusreason", "tags", "nothing"})
        assert cut == whole and list(cut) == list(whole)
        for name in whole:
            assert reg.twin_doc(device_id, frozenset({name.lower()})) == {name: whole[name]}
        assert reg.twin_doc(device_id, frozenset()) == {}
    assert reg.get_twin("full")["statusReason"] == "r"
    assert reg.twin_doc("ghost", frozenset({"deviceid"})) is None
    docs = list(reg.iter_twin_docs(frozenset({"deviceid", "tags"})))
    assert docs == [
        {"deviceId": "full", "tags": {"site": {"a": [1, {"b": 2}]}}},
        {"deviceId": "plain"},
    ]
