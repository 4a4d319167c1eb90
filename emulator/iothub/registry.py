"""The identity registry and the device twins: the hub core's state.

:class:`Registry` implements :class:`~emulator.iothub.ports.TwinStore` for the device endpoint and
the job engine, and offers the operations behind the REST API (``/devices/{id}``,
``/twins/{id}``) returning IoT Hub's JSON shapes (reference/iothub.md §1.6, §1.7).

Rules:

- Devices live in memory as compact slotted records; twin documents are built on demand (so
  100,000 twins fit in a small share of the 1 GB budget) and are never cached. A twin read only
  to evaluate a query is built with the top-level members the query reads and no others
  (:func:`iothub_query.top_level_names`; the same result, a fraction of the work).
- A job's device selection builds twins only for the devices its condition can match: a
  top-level ``deviceId IN [...]`` (a rollout wave) or ``deviceId = '...'`` is a key lookup, the
  whole condition then evaluated on those twins; any other condition reads every twin. When the
  condition is that list and nothing else, the lookup is the answer: no twin is built.
- Every change is written through to SQLite (table ``iothub_devices``, one compact JSON row per
  device) and committed before the caller answers anyone, so a SIGKILL loses nothing. A job's
  twin patch over many devices is one ``executemany`` in one transaction.
- The registry never pushes anything to devices: twin operations return the desired patch to push
  (with its ``$version``) and the caller hands it to the :class:`~emulator.iothub.ports.DeviceLink`.
- Merge patches follow IoT Hub's twin rules: ``null`` deletes a member, nested objects merge,
  members whose name starts with ``$`` are ignored in patches.
- Every write of tags, desired or reported properties (REST, jobs' patches are checked by the
  job spec, devices over MQTT) passes IoT Hub's twin limits (:mod:`emulator.iothub.twin_limits`:
  keys, values, 10 levels of depth, 8/32 KB sizes) or is refused with 400004 and changes nothing.
- Stored rows are decoded without recursion past the depth limit: a row from an older emulator
  whose tags, desired or reported section nests deeper than IoT Hub allows has that section
  emptied at load (its version bumped, the row rewritten, one warning logged); the device, its
  keys and its other sections are kept. No read can meet a document deeper than the limit.
- Service policies (``iothubowner``) and their keys live in table ``iothub_policies``, generated
  on first start and reused afterwards.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from emulator.iothub import twin_limits
from emulator.iothub.clock import Clock
from emulator.iothub.database import Database
from emulator.iothub.errors import HubError
from emulator.iothub.ports import Predicate
from iothub_query import Condition, exact_members, pinned_members, top_level_names

__all__ = [
    "OWNER_POLICY",
    "UNSET_TIME",
    "Registry",
    "TwinUpdate",
    "format_time",
    "generate_key",
]

OWNER_POLICY = "iothubowner"
UNSET_TIME = "0001-01-01T00:00:00Z"
_MAX_TOP = 1000
_DEVICE_ID_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-:.+%_#*?!(),=@$'"
)
_STATUSES = ("enabled", "disabled")
_COMPACT = (",", ":")
# A stored row is a JSON array whose tags/desired/reported members are sections: two levels
# above the section's own limit.
_ROW_DEPTH = twin_limits.MAX_DEPTH + 2
# Positions of the sections in a stored row (see _Device.dump), with their names and versions.
_ROW_SECTIONS = (
    (11, "tags", None),
    (12, "properties.desired", 13),
    (14, "properties.reported", 15),
)

_log = structlog.get_logger("emulator.iothub.registry")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS iothub_devices (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS iothub_policies (name TEXT PRIMARY KEY, primary_key TEXT NOT NULL,
    secondary_key TEXT NOT NULL);
"""


def generate_key() -> str:
    """A fresh base64 symmetric key of 32 random bytes, like the ones IoT Hub generates."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def format_time(when: datetime) -> str:
    """IoT Hub's timestamp format: ISO-8601 UTC with seven fraction digits and ``Z``."""
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond:06d}0Z"


@dataclass(frozen=True, slots=True)
class TwinUpdate:
    """The result of a twin write: the new twin document and the desired patch to push
    (None when the desired properties did not change)."""

    twin: dict[str, Any]
    push: dict[str, Any] | None


class _Device:
    """One device's identity and twin, kept compact (slots, shared empty values)."""

    __slots__ = (
        "c2d",
        "conn_updated",
        "connected",
        "desired",
        "desired_version",
        "device_id",
        "edge",
        "etag_n",
        "generation",
        "last_activity",
        "primary",
        "reported",
        "reported_version",
        "secondary",
        "status",
        "status_reason",
        "status_updated",
        "tags",
        "version",
    )

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.generation = ""
        self.etag_n = 1
        self.status = "enabled"
        self.status_reason: str | None = None
        self.status_updated = UNSET_TIME
        self.primary = ""
        self.secondary = ""
        self.connected = False
        self.conn_updated = UNSET_TIME
        self.last_activity = UNSET_TIME
        self.c2d = 0
        self.edge = False
        self.tags: dict[str, Any] | None = None
        self.desired: dict[str, Any] | None = None
        self.desired_version = 1
        self.reported: dict[str, Any] | None = None
        self.reported_version = 1
        self.version = 1

    def dump(self) -> str:
        return json.dumps(
            [
                self.generation,
                self.etag_n,
                self.status,
                self.status_reason,
                self.status_updated,
                self.primary,
                self.secondary,
                self.last_activity,
                self.conn_updated,
                self.c2d,
                self.edge,
                self.tags,
                self.desired,
                self.desired_version,
                self.reported,
                self.reported_version,
                self.version,
            ],
            separators=_COMPACT,
        )

    @classmethod
    def load(cls, device_id: str, data: str) -> tuple[_Device, list[str]]:
        """Decode a stored row; also return the names of sections dropped as too deep."""
        dev = cls(device_id)
        fields, dropped = _decode_row(data)
        (
            dev.generation,
            dev.etag_n,
            dev.status,
            dev.status_reason,
            dev.status_updated,
            dev.primary,
            dev.secondary,
            dev.last_activity,
            dev.conn_updated,
            dev.c2d,
            dev.edge,
            dev.tags,
            dev.desired,
            dev.desired_version,
            dev.reported,
            dev.reported_version,
            dev.version,
        ) = fields
        dev.status = "enabled" if dev.status == "enabled" else "disabled"  # share the strings
        if dropped:
            dev.version += 1
        return dev, dropped

    @property
    def etag(self) -> str:
        return base64.b64encode(str(self.etag_n).encode()).decode()

    @property
    def twin_etag(self) -> str:
        return base64.b64encode(self.version.to_bytes(8, "big")).decode()


class Registry:
    """Devices, their keys and twins, in memory with SQLite write-through.

    Args:
        db: the emulator's database (the registry owns tables ``iothub_devices`` and
            ``iothub_policies``).
        clock: the source of timestamps.
        hub_host: the host name devices put in their SAS ``sr`` (no port).
    """

    def __init__(self, db: Database, clock: Clock, hub_host: str) -> None:
        self._db = db
        self._clock = clock
        self._hub_host = hub_host
        self._devices: dict[str, _Device] = {}
        self._policies: dict[str, tuple[str, str]] = {}
        db.connection.executescript(_SCHEMA)
        repaired: list[_Device] = []
        for device_id, data in db.connection.execute("SELECT id, data FROM iothub_devices"):
            dev, dropped = _Device.load(device_id, data)
            self._devices[device_id] = dev
            if dropped:
                repaired.append(dev)
                _log.warning(
                    "twin sections over the depth limit dropped at load",
                    device_id=device_id,
                    sections=dropped,
                    limit=twin_limits.MAX_DEPTH,
                )
        if repaired:
            with db.transaction() as conn:
                conn.executemany(
                    "UPDATE iothub_devices SET data = ? WHERE id = ?",
                    [(dev.dump(), dev.device_id) for dev in repaired],
                )
        for name, primary, secondary in db.connection.execute(
            "SELECT name, primary_key, secondary_key FROM iothub_policies"
        ):
            self._policies[name] = (primary, secondary)
        if OWNER_POLICY not in self._policies:
            keys = (generate_key(), generate_key())
            db.connection.execute(
                "INSERT INTO iothub_policies VALUES (?, ?, ?)", (OWNER_POLICY, *keys)
            )
            self._policies[OWNER_POLICY] = keys

    # --- service policies ----------------------------------------------------------------

    def policy_keys(self, policy: str | None) -> list[str]:
        """The base64 keys of a shared-access policy; empty when the policy is unknown."""
        keys = self._policies.get(policy or "")
        return list(keys) if keys else []

    def owner_key(self) -> str:
        """The primary key of the ``iothubowner`` policy."""
        return self._policies[OWNER_POLICY][0]

    # --- TwinStore ---------------------------------------------------------------------

    def hub_host(self) -> str:
        return self._hub_host

    def device_keys(self, device_id: str) -> tuple[str, str] | None:
        dev = self._devices.get(device_id)
        if dev is None or dev.status != "enabled":
            return None
        return dev.primary, dev.secondary

    def twin_properties(self, device_id: str) -> dict[str, Any]:
        dev = self._require(device_id)
        return {
            "desired": {**(dev.desired or {}), "$version": dev.desired_version},
            "reported": {**(dev.reported or {}), "$version": dev.reported_version},
        }

    def patch_reported(self, device_id: str, patch: Mapping[str, Any]) -> int:
        dev = self._require(device_id)
        if not isinstance(patch, Mapping):
            raise HubError.argument_invalid("A reported-properties patch must be a JSON object")
        twin_limits.check_section(patch, "properties.reported")
        merged = _merge(dev.reported or {}, _strip_system(patch))
        twin_limits.check_growth(
            dev.reported, merged, "properties.reported", twin_limits.MAX_PROPERTIES_BYTES
        )
        dev.reported = merged or None
        dev.reported_version += 1
        dev.version += 1
        dev.last_activity = format_time(self._clock.now())
        self._save(dev)
        return dev.reported_version

    def set_connection_state(self, device_id: str, connected: bool, when: datetime) -> None:
        dev = self._devices.get(device_id)
        if dev is None:
            return
        stamp = format_time(when)
        dev.connected = connected
        dev.conn_updated = stamp
        dev.last_activity = stamp
        self._save(dev)

    def select_device_ids(self, condition: Predicate | None) -> list[str]:
        if condition is None:
            return sorted(self._devices)
        if not isinstance(condition, Condition):  # another predicate: whole twins, every one
            return [i for i in sorted(self._devices) if condition.matches(self._twin_of(i))]
        devices = self._devices
        exact = exact_members(condition, "deviceId")
        if exact is not None:  # the condition is the id list itself: a lookup decides
            return sorted(i for i in exact if isinstance(i, str) and i in devices)
        pinned = pinned_members(condition, "deviceId")
        if pinned is None:
            ids = sorted(devices)
        else:  # only these ids can match: look them up instead of reading every twin
            ids = sorted(i for i in pinned if isinstance(i, str) and i in devices)
        members = _members_named(top_level_names(condition))
        return [i for i in ids if condition.matches(_twin_members(devices[i], members))]

    def apply_job_patch(
        self,
        device_ids: Sequence[str],
        tags: Mapping[str, Any] | None,
        desired: Mapping[str, Any] | None,
    ) -> dict[str, dict[str, Any]]:
        pushes: dict[str, dict[str, Any]] = {}
        rows: list[tuple[str, str]] = []
        desired_patch = _strip_system(desired) if desired else None
        for device_id in device_ids:
            dev = self._devices.get(device_id)
            if dev is None:
                continue
            if tags:
                dev.tags = _merge(dev.tags or {}, tags) or None
            if desired_patch:
                dev.desired = _merge(dev.desired or {}, desired_patch) or None
                dev.desired_version += 1
                pushes[device_id] = {**desired_patch, "$version": dev.desired_version}
            else:
                pushes[device_id] = {}
            dev.version += 1
            rows.append((dev.dump(), device_id))
        with self._db.transaction() as conn:
            conn.executemany("UPDATE iothub_devices SET data = ? WHERE id = ?", rows)
        return pushes

    # --- documents -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def device_ids(self) -> list[str]:
        """Every device id, sorted."""
        return sorted(self._devices)

    def twin_doc(
        self, device_id: str, names: frozenset[str] | None = None
    ) -> dict[str, Any] | None:
        """The twin document of a device, or None when it does not exist.

        Args:
            device_id: the device.
            names: build only the top-level members whose lower-cased names are in this set
                (what a query reads: :func:`iothub_query.top_level_names`); None = all.
        """
        dev = self._devices.get(device_id)
        if dev is None:
            return None
        return self._twin(dev) if names is None else _twin_members(dev, _members_named(names))

    def iter_twin_docs(self, names: frozenset[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every twin document, in device-id order, built one at a time (only the members
        named in ``names`` when given, as :meth:`twin_doc`). The ids are those of the first
        read; a device deleted before its turn is skipped."""
        members = None if names is None else _members_named(names)
        for device_id in sorted(self._devices):
            dev = self._devices.get(device_id)
            if dev is not None:
                yield self._twin(dev) if members is None else _twin_members(dev, members)

    # --- REST operations: devices ---------------------------------------------------------

    def put_device(
        self, device_id: str, body: Mapping[str, Any], if_match: str | None
    ) -> dict[str, Any]:
        """Create a device, or update it when ``If-Match`` is given (``PUT /devices/{id}``).

        Raises:
            HubError: 400004 for a bad body, 409001 when creating an existing device, 404001
                when updating an unknown one, 412001 on an etag mismatch.
        """
        _check_device_id(device_id)
        if body.get("deviceId", device_id) != device_id:
            raise HubError.argument_invalid("deviceId in the body does not match the URL")
        status = body.get("status") or "enabled"
        if status not in _STATUSES:
            raise HubError.argument_invalid(f"Invalid device status {status!r}")
        auth = body.get("authentication") or {}
        if not isinstance(auth, Mapping):
            raise HubError.argument_invalid("authentication must be an object")
        auth_type = auth.get("type") or "sas"
        if auth_type != "sas":
            raise HubError.argument_invalid(
                f"Authentication type {auth_type!r} is not supported by the emulator (use 'sas')"
            )
        symmetric = auth.get("symmetricKey") or {}
        primary = symmetric.get("primaryKey") if isinstance(symmetric, Mapping) else None
        secondary = symmetric.get("secondaryKey") if isinstance(symmetric, Mapping) else None
        for key in (primary, secondary):
            if key is not None and not _valid_key(key):
                raise HubError.argument_invalid(
                    "Symmetric keys must be base64 strings of 16 to 64 bytes"
                )
        caps = body.get("capabilities") or {}
        edge = bool(caps.get("iotEdge")) if isinstance(caps, Mapping) else False
        now = format_time(self._clock.now())
        existing = self._devices.get(device_id)
        if if_match is None:
            if existing is not None:
                raise HubError.device_already_exists(device_id)
            dev = _Device(device_id)
            dev.generation = str(secrets.randbits(60))
            dev.status_updated = now
        else:
            if existing is None:
                raise HubError.device_not_found(device_id)
            _check_etag(if_match, existing.etag)
            dev = existing
            dev.etag_n += 1
            if dev.status != status:
                dev.status_updated = now
        dev.status = "enabled" if status == "enabled" else "disabled"
        reason = body.get("statusReason")
        dev.status_reason = reason if isinstance(reason, str) else None
        dev.primary = primary or (dev.primary if existing else "") or generate_key()
        dev.secondary = secondary or (dev.secondary if existing else "") or generate_key()
        dev.edge = edge
        self._devices[device_id] = dev
        self._save(dev)
        return self._device_json(dev)

    def create_devices(self, device_ids: Sequence[str]) -> int:
        """Create the devices that do not exist yet, with generated keys, in one transaction.

        Returns:
            How many devices were created.
        """
        now = format_time(self._clock.now())
        rows: list[tuple[str, str]] = []
        for device_id in device_ids:
            if device_id in self._devices:
                continue
            _check_device_id(device_id)
            dev = _Device(device_id)
            dev.generation = str(secrets.randbits(60))
            dev.status_updated = now
            dev.primary = generate_key()
            dev.secondary = generate_key()
            self._devices[device_id] = dev
            rows.append((device_id, dev.dump()))
        with self._db.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO iothub_devices (id, data) VALUES (?, ?)", rows)
        return len(rows)

    def create_device(self, device_id: str) -> dict[str, Any]:
        """Create a device with generated keys unless it exists; return its identity JSON."""
        dev = self._devices.get(device_id)
        if dev is not None:
            return self._device_json(dev)
        return self.put_device(device_id, {}, None)

    def get_device(self, device_id: str) -> dict[str, Any]:
        """The device identity JSON (``GET /devices/{id}``); raises HubError 404001."""
        return self._device_json(self._require(device_id))

    def list_devices(self, top: int | None) -> list[dict[str, Any]]:
        """Up to ``top`` device identities (1..1000; anything else means 1000)."""
        limit = top if top is not None and 1 <= top <= _MAX_TOP else _MAX_TOP
        return [self._device_json(self._devices[i]) for i in sorted(self._devices)[:limit]]

    def delete_device(self, device_id: str, if_match: str | None) -> None:
        """Delete a device (``DELETE /devices/{id}``); raises HubError 404001 or 412001."""
        dev = self._require(device_id)
        if if_match is not None:
            _check_etag(if_match, dev.etag)
        del self._devices[device_id]
        self._db.connection.execute("DELETE FROM iothub_devices WHERE id = ?", (device_id,))

    # --- REST operations: twins ------------------------------------------------------------

    def get_twin(self, device_id: str) -> dict[str, Any]:
        """The twin document (``GET /twins/{id}``); raises HubError 404001."""
        return self._twin(self._require(device_id))

    def update_twin(
        self, device_id: str, body: Mapping[str, Any], if_match: str | None, *, replace: bool
    ) -> TwinUpdate:
        """Patch (``PATCH /twins/{id}``) or replace (``PUT``) the tags and desired properties.

        A patch merges ``tags`` and ``properties.desired``; a replace sets both wholesale.
        Reported properties and identity fields in the body are ignored, as IoT Hub does.

        Raises:
            HubError: 404001 unknown device, 412001 etag mismatch, 400004 bad body.
        """
        dev = self._require(device_id)
        if if_match is not None:
            _check_etag(if_match, dev.twin_etag)
        tags = body.get("tags")
        props = body.get("properties") or {}
        if not isinstance(props, Mapping):
            raise HubError.argument_invalid("properties must be an object")
        desired = props.get("desired")
        if tags is not None and not isinstance(tags, Mapping):
            raise HubError.argument_invalid("tags must be an object")
        if desired is not None and not isinstance(desired, Mapping):
            raise HubError.argument_invalid("properties.desired must be an object")
        if tags is not None:
            twin_limits.check_section(tags, "tags")
        if desired is not None:
            twin_limits.check_section(desired, "properties.desired")
        push: dict[str, Any] | None = None
        changed = False
        if replace:
            new_tags = _strip_nulls(_strip_system(tags or {}))
            new_desired = _strip_nulls(_strip_system(desired or {}))
            _check_sizes(dev, new_tags, new_desired)
            changed = new_tags != (dev.tags or {}) or new_desired != (dev.desired or {})
            if new_desired != (dev.desired or {}):
                patch = {k: None for k in dev.desired or {} if k not in new_desired}
                patch.update(new_desired)
                dev.desired = new_desired or None
                dev.desired_version += 1
                push = {**patch, "$version": dev.desired_version}
            dev.tags = new_tags or None
        else:
            patch = _strip_system(desired) if desired else {}
            merged_tags = _merge(dev.tags or {}, _strip_system(tags)) if tags else dev.tags
            merged_desired = _merge(dev.desired or {}, patch) if patch else dev.desired
            _check_sizes(dev, merged_tags, merged_desired)
            if tags:
                dev.tags = merged_tags or None
                changed = True
            if patch:
                dev.desired = merged_desired or None
                dev.desired_version += 1
                push = {**patch, "$version": dev.desired_version}
                changed = True
        if changed:
            dev.version += 1
            self._save(dev)
        return TwinUpdate(self._twin(dev), push)

    # --- internals -------------------------------------------------------------------------

    def _require(self, device_id: str) -> _Device:
        dev = self._devices.get(device_id)
        if dev is None:
            raise HubError.device_not_found(device_id)
        return dev

    def _save(self, dev: _Device) -> None:
        self._db.connection.execute(
            "INSERT OR REPLACE INTO iothub_devices (id, data) VALUES (?, ?)",
            (dev.device_id, dev.dump()),
        )

    def _device_json(self, dev: _Device) -> dict[str, Any]:
        return {
            "deviceId": dev.device_id,
            "generationId": dev.generation,
            "etag": dev.etag,
            "connectionState": "Connected" if dev.connected else "Disconnected",
            "status": dev.status,
            "statusReason": dev.status_reason,
            "connectionStateUpdatedTime": dev.conn_updated,
            "statusUpdatedTime": dev.status_updated,
            "lastActivityTime": dev.last_activity,
            "cloudToDeviceMessageCount": dev.c2d,
            "authentication": {
                "symmetricKey": {"primaryKey": dev.primary, "secondaryKey": dev.secondary},
                "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
                "type": "sas",
            },
            "capabilities": {"iotEdge": dev.edge},
        }

    def _twin_of(self, device_id: str) -> dict[str, Any]:
        return self._twin(self._devices[device_id])

    def _twin(self, dev: _Device) -> dict[str, Any]:
        # The whole document, written out (the common read); _TWIN_MEMBERS builds the same
        # members one by one for a document cut down to what a query reads (tested equal).
        doc: dict[str, Any] = {
            "deviceId": dev.device_id,
            "etag": dev.twin_etag,
            "deviceEtag": dev.etag,
            "status": dev.status,
            "statusUpdateTime": dev.status_updated,
            "connectionState": "Connected" if dev.connected else "Disconnected",
            "lastActivityTime": dev.last_activity,
            "cloudToDeviceMessageCount": dev.c2d,
            "authenticationType": "sas",
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            "version": dev.version,
        }
        if dev.status_reason is not None:
            doc["statusReason"] = dev.status_reason
        if dev.tags:
            doc["tags"] = _deep_copy(dev.tags)
        doc["properties"] = {
            "desired": {**_deep_copy(dev.desired or {}), "$version": dev.desired_version},
            "reported": {**_deep_copy(dev.reported or {}), "$version": dev.reported_version},
        }
        doc["capabilities"] = {"iotEdge": dev.edge}
        return doc


_ABSENT: Any = object()

# Each top-level member of a twin document in its place (``Registry._twin``'s order), by its
# lower-cased name: a builder returning the member's value, or _ABSENT when the twin lacks it.
_TWIN_MEMBERS: dict[str, tuple[str, Callable[[_Device], Any]]] = {
    name.lower(): (name, build)
    for name, build in (
        ("deviceId", lambda dev: dev.device_id),
        ("etag", lambda dev: dev.twin_etag),
        ("deviceEtag", lambda dev: dev.etag),
        ("status", lambda dev: dev.status),
        ("statusUpdateTime", lambda dev: dev.status_updated),
        ("connectionState", lambda dev: "Connected" if dev.connected else "Disconnected"),
        ("lastActivityTime", lambda dev: dev.last_activity),
        ("cloudToDeviceMessageCount", lambda dev: dev.c2d),
        ("authenticationType", lambda dev: "sas"),
        (
            "x509Thumbprint",
            lambda dev: {"primaryThumbprint": None, "secondaryThumbprint": None},
        ),
        ("version", lambda dev: dev.version),
        (
            "statusReason",
            lambda dev: _ABSENT if dev.status_reason is None else dev.status_reason,
        ),
        ("tags", lambda dev: _deep_copy(dev.tags) if dev.tags else _ABSENT),
        (
            "properties",
            lambda dev: {
                "desired": {**_deep_copy(dev.desired or {}), "$version": dev.desired_version},
                "reported": {**_deep_copy(dev.reported or {}), "$version": dev.reported_version},
            },
        ),
        ("capabilities", lambda dev: {"iotEdge": dev.edge}),
    )
}


@functools.lru_cache(maxsize=64)
def _members_named(names: frozenset[str]) -> tuple[tuple[str, Callable[[_Device], Any]], ...]:
    """The builders of the twin members whose lower-cased names are in ``names``, in order."""
    return tuple(member for lowered, member in _TWIN_MEMBERS.items() if lowered in names)


def _twin_members(
    dev: _Device, members: tuple[tuple[str, Callable[[_Device], Any]], ...]
) -> dict[str, Any]:
    """The twin document cut down to ``members`` (from :func:`_members_named`), in the whole
    document's order (equal to those members of ``Registry._twin``)."""
    doc: dict[str, Any] = {}
    for name, build in members:
        if (value := build(dev)) is not _ABSENT:
            doc[name] = value
    return doc


def _deep_copy(value: dict[str, Any]) -> dict[str, Any]:
    """Copy the nested dicts of a section (lists and scalars are never mutated in place by the
    registry), with an explicit stack: no document depth can exhaust the interpreter's."""
    top = dict(value)
    stack = [top]
    while stack:
        current = stack.pop()
        for key, child in current.items():
            if isinstance(child, dict):
                copied = dict(child)
                current[key] = copied
                stack.append(copied)
    return top


def _check_sizes(
    dev: _Device, tags: Mapping[str, Any] | None, desired: Mapping[str, Any] | None
) -> None:
    twin_limits.check_growth(dev.tags, tags, "tags", twin_limits.MAX_TAGS_BYTES)
    twin_limits.check_growth(
        dev.desired, desired, "properties.desired", twin_limits.MAX_PROPERTIES_BYTES
    )


def _decode_row(data: str) -> tuple[list[Any], list[str]]:
    """A stored row's fields, and the names of the sections emptied because they nest deeper
    than IoT Hub allows (rows an older emulator wrote before it enforced the limit)."""
    try:
        return list(twin_limits.decode_json(data, _ROW_DEPTH)), []
    except twin_limits.JsonTooDeep:
        pass
    decoder = json.JSONDecoder()
    sections = {index: name for index, name, _ in _ROW_SECTIONS}
    fields: list[Any] = []
    dropped: list[str] = []
    pos = _skip_space(data, data.index("[") + 1)
    while data[pos] != "]":
        index = len(fields)
        if data[pos] in "[{":
            end, depth = twin_limits.container_extent(data, pos)
        else:
            end, depth = decoder.raw_decode(data, pos)[1], 0
        if depth > twin_limits.MAX_DEPTH + 1 and index in sections:
            fields.append(None)
            dropped.append(sections[index])
        elif depth > twin_limits.MAX_DEPTH + 1:
            raise ValueError(f"stored row member {index} nests {depth} levels deep")
        else:
            fields.append(decoder.raw_decode(data, pos)[0])
        pos = _skip_space(data, end)
        if data[pos] == ",":
            pos = _skip_space(data, pos + 1)
    for _, name, version in _ROW_SECTIONS:
        if name in dropped and version is not None:
            fields[version] += 1
    return fields, dropped


def _skip_space(text: str, pos: int) -> int:
    while text[pos] in " \t\r\n":
        pos += 1
    return pos


def _merge(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386) of ``patch`` onto a copy of ``target``."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            current = result.get(key)
            merged = _merge(current if isinstance(current, Mapping) else {}, value)
            result[key] = merged
        else:
            result[key] = value
    return result


def _strip_system(section: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if not k.startswith("$")}


def _strip_nulls(section: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _strip_nulls(v) if isinstance(v, Mapping) else v
        for k, v in section.items()
        if v is not None
    }


def _check_etag(if_match: str, current: str) -> None:
    wanted = if_match.strip()
    if wanted.startswith('"') and wanted.endswith('"') and len(wanted) >= 2:
        wanted = wanted[1:-1]
    if wanted != "*" and wanted != current:
        raise HubError.precondition_failed(
            f'The etag {if_match} does not match the current etag "{current}"'
        )


def _check_device_id(device_id: str) -> None:
    if not device_id or len(device_id) > 128 or not set(device_id) <= _DEVICE_ID_CHARS:
        raise HubError.argument_invalid(
            f"Device id {device_id!r} is invalid: up to 128 ASCII letters, digits and "
            "- : . + % _ # * ? ! ( ) , = @ $ '"
        )


def _valid_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        return False
    return 16 <= len(raw) <= 64
