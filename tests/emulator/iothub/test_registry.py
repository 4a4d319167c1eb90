"""The registry as a TwinStore: merge rules, versions, write-through durability, bulk patches."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.iothub.clock import ManualClock
from emulator.iothub.database import Database
from emulator.iothub.errors import HubError
from emulator.iothub.registry import Registry


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
