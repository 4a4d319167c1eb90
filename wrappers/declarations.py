"""Wrapper declarations: the TOML files under ``config/wrappers/``, read and checked.

A file holds ``[[service]]`` entries::

    [[service]]
    name = "Reboot"                      # the service name (letters, digits, _; 1..100)
    method = "reboot"                    # the device's direct method
    description = "Reboot the device"

    [[service.inputs]]
    name = "delaySeconds"                # becomes the payload member of that name
    type = "INTEGER"                     # STRING NUMBER INTEGER LONG BOOLEAN DATETIME JSON
    default = 0                          # or: required = true (not both)
    description = "seconds to wait before rebooting"

Rules: the files are a trust boundary, parsed with pydantic (unknown keys are errors); a default
must fit its type; an input may not reuse a name the wrapper services add themselves
(:data:`RESERVED_INPUTS`, which holds the rollout form's inputs too); service names are unique
across all files, never start with ``AzureIotDeviceJob`` and never take the name of another
wrapper's rollout form (``<Name>Rollout``). Any mistake stops start-up with
:class:`WrapperConfigError` naming the file, the entry and the problem.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.alwayson import AlwaysOnError, BaseType, coerce_value
from agent.errors import ConfigError
from agent.registry import GET_METADATA, NOTIFY_PROPERTY_UPDATE
from services.rollouts import ROLLOUT_ONLY_INPUTS
from services.rules import METHOD_NAME

__all__ = [
    "INPUT_TYPES",
    "RESERVED_INPUTS",
    "ROLLOUT_SUFFIX",
    "WrapperConfigError",
    "WrapperDeclaration",
    "WrapperInput",
    "load_wrappers",
    "parse_wrappers",
]

InputType = Literal["STRING", "NUMBER", "INTEGER", "LONG", "BOOLEAN", "DATETIME", "JSON"]
INPUT_TYPES: tuple[str, ...] = get_args(InputType)

RESERVED_INPUTS = frozenset(
    {
        "queryCondition",
        "startTime",
        "maxExecutionTimeInSeconds",
        "jobId",
        "responseTimeoutInSeconds",
        "connectTimeoutInSeconds",
        *ROLLOUT_ONLY_INPUTS,
    }
)
"""Inputs the wrapper services declare themselves (the ``<Name>Rollout`` form's included)."""
ROLLOUT_SUFFIX = "Rollout"
"""``<Name>Rollout`` is the rollout form of the wrapper ``<Name>`` on the gateway Thing."""

# pydantic matches ``pattern`` with Rust's regex, where ``$`` is the end of the text (a trailing
# newline is refused, tests/wrappers); METHOD_NAME is Python's re, used with fullmatch.
_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"


class WrapperConfigError(ConfigError):
    """A wrapper declaration file is wrong: the message names the file, entry and problem."""


class WrapperInput(BaseModel):
    """One typed input of a wrapper service: a member of the method's payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    type: InputType
    required: bool = False
    default: Any = None
    description: str = ""

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_INPUTS:
            raise ValueError(f"{value} is an input every wrapper service already has")
        return value

    @model_validator(mode="after")
    def _default_fits(self) -> WrapperInput:
        if self.required and self.default is not None:
            raise ValueError("give either required = true or a default, not both")
        if self.default is not None:
            try:
                coerced = coerce_value(BaseType[self.type], self.default)
            except AlwaysOnError as exc:
                problem = f"default {self.default!r} does not fit {self.type}: {exc}"
                raise ValueError(problem) from None
            object.__setattr__(self, "default", coerced)
        return self

    @property
    def base_type(self) -> BaseType:
        """The input's ThingWorx base type."""
        return BaseType[self.type]


class WrapperDeclaration(BaseModel):
    """One wrapper service: a name, the device method it calls and its typed inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=_NAME)
    method: str
    description: str = ""
    inputs: tuple[WrapperInput, ...] = ()

    @field_validator("name")
    @classmethod
    def _not_a_job_service(cls, value: str) -> str:
        if value.startswith("AzureIotDeviceJob"):
            raise ValueError("names starting with AzureIotDeviceJob belong to the job services")
        if value in (GET_METADATA, NOTIFY_PROPERTY_UPDATE):
            raise ValueError(f"{value} is a built-in service of every Thing")
        return value

    @field_validator("method")
    @classmethod
    def _method_name(cls, value: str) -> str:
        if not METHOD_NAME.fullmatch(value):
            raise ValueError("must be 1..100 characters without spaces, '$', '/', '?' or '#'")
        return value

    @model_validator(mode="after")
    def _unique_inputs(self) -> WrapperDeclaration:
        seen: set[str] = set()
        for item in self.inputs:
            if item.name in seen:
                raise ValueError(f"input {item.name} is declared twice")
            seen.add(item.name)
        return self


class _WrapperFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: list[WrapperDeclaration] = Field(default_factory=list)


@dataclass(frozen=True)
class _Located:
    declaration: WrapperDeclaration
    source: str


def _entry_name(raw: Any, index: int) -> str:
    services = raw.get("service") if isinstance(raw, dict) else None
    if isinstance(services, list) and index < len(services) and isinstance(services[index], dict):
        name = services[index].get("name")
        if isinstance(name, str):
            return f"[[service]] #{index + 1} ({name})"
    return f"[[service]] #{index + 1}"


def _describe(exc: ValidationError, raw: Any) -> str:
    first = exc.errors()[0]
    loc = list(first["loc"])
    entry = "file"
    if len(loc) >= 2 and loc[0] == "service" and isinstance(loc[1], int):
        entry = _entry_name(raw, loc[1])
        loc = loc[2:]
    where = ".".join(str(part) for part in loc)
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{entry}: {where + ': ' if where else ''}{message}{more}"


def parse_wrappers(text: str, source: str) -> list[WrapperDeclaration]:
    """Parse one declaration file's text.

    Args:
        text: the TOML text.
        source: the file's name, for messages.

    Raises:
        WrapperConfigError: bad TOML or a wrong declaration, naming ``source`` and the entry.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WrapperConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        parsed = _WrapperFile.model_validate(raw)
    except ValidationError as exc:
        raise WrapperConfigError(f"{source}: {_describe(exc, raw)}") from None
    return list(parsed.service)


def load_wrappers(directory: Path) -> list[WrapperDeclaration]:
    """Read every ``*.toml`` file of ``directory`` (sorted by name).

    A missing directory declares no wrappers.

    Raises:
        WrapperConfigError: a file is unreadable or wrong, or two entries share a name.
    """
    if not directory.is_dir():
        return []
    found: dict[str, _Located] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WrapperConfigError(f"{path}: cannot be read: {exc}") from None
        for index, declaration in enumerate(parse_wrappers(text, str(path))):
            if declaration.name in found:
                raise WrapperConfigError(
                    f"{path}: [[service]] #{index + 1} ({declaration.name}): the name is already "
                    f"declared in {found[declaration.name].source}"
                )
            found[declaration.name] = _Located(declaration, str(path))
    for name, located in found.items():
        other = found.get(name + ROLLOUT_SUFFIX)
        if other is not None:
            raise WrapperConfigError(
                f"{other.source}: {other.declaration.name}: the name is taken by the rollout form "
                f"of {name} (declared in {located.source}) on the gateway Thing: rename it"
            )
    return [located.declaration for located in found.values()]
