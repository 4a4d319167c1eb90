"""The job engine's own exceptions.

Errors that IoT Hub answers to a caller are :class:`emulator.iothub.errors.HubError` (built with
its named constructors). The classes here are the
engine's internal tree; they signal a bug or a corrupt database, never a caller's mistake::

    EmulatorError (emulator.errors)
     └── JobEngineError
          ├── IllegalTransitionError   a state change the lifecycle tables refuse
          └── EngineStateError         the engine used before start() / after stop()
"""

from __future__ import annotations

from emulator.errors import EmulatorError

__all__ = ["EngineStateError", "IllegalTransitionError", "JobEngineError"]


class JobEngineError(EmulatorError):
    """Base of the job engine's internal errors."""


class IllegalTransitionError(JobEngineError):
    """A job or device-job state change that the lifecycle tables do not allow."""


class EngineStateError(JobEngineError):
    """The engine was used in a state where the call makes no sense (e.g. not started)."""
