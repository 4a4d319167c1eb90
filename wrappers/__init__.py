"""The device-method wrapper catalogue: declarations in ``config/wrappers/*.toml`` → typed services.

:func:`load_wrappers` reads and checks the declarations (a wrong one stops start-up with
:class:`WrapperConfigError`); :func:`wrapper_service` builds the service of one declaration for
one Thing (a direct call on a device Thing, a method job on the gateway Thing), and
:func:`wrapper_rollout_service` its rollout form ``<Name>Rollout`` on the gateway Thing.
"""

from __future__ import annotations

from wrappers.declarations import (
    RESERVED_INPUTS,
    WrapperConfigError,
    WrapperDeclaration,
    WrapperInput,
    load_wrappers,
    parse_wrappers,
)
from wrappers.services import build_payload, wrapper_rollout_service, wrapper_service

__all__ = [
    "RESERVED_INPUTS",
    "WrapperConfigError",
    "WrapperDeclaration",
    "WrapperInput",
    "build_payload",
    "load_wrappers",
    "parse_wrappers",
    "wrapper_rollout_service",
    "wrapper_service",
]
