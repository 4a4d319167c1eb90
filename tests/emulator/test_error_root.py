"""One error root for the two emulators: every tree hangs under EmulatorError, unchanged below."""

from __future__ import annotations

import pytest

from emulator.errors import EmulatorError
from emulator.iothub.errors import HubError
from emulator.iothub.fleet import FleetError
from emulator.iothub.jobs.exceptions import EngineStateError, IllegalTransitionError, JobEngineError
from emulator.iothub.mqtt.packets import MqttProtocolError
from emulator.iothub.sas import SasError
from emulator.thingworx.errors import CallError, EdgeFailed, LinkClosed, StandInError
from iothub_query import QueryError


@pytest.mark.parametrize(
    "tree", [HubError, JobEngineError, MqttProtocolError, SasError, FleetError, StandInError]
)
def test_each_tree_hangs_under_the_root(tree: type[Exception]) -> None:
    assert tree.__bases__ == (EmulatorError,)


def test_subclasses_keep_their_own_base() -> None:
    assert issubclass(IllegalTransitionError, JobEngineError)
    assert issubclass(EngineStateError, JobEngineError)
    assert EdgeFailed.__bases__ == (CallError,) and LinkClosed.__bases__ == (StandInError,)


def test_the_query_language_keeps_its_own_root() -> None:
    assert not issubclass(QueryError, EmulatorError)
    assert issubclass(QueryError, ValueError)  # the job engine's ConditionParser contract


def test_a_hub_error_is_caught_as_an_emulator_error() -> None:
    with pytest.raises(EmulatorError):
        raise HubError.job_not_found("j1")
