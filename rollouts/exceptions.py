"""The rollouts package's exceptions, one tree::

RolloutError
├── PlanError               an input breaks a rule (one line naming the input and the rule);
│                           the services answer it as BAD_REQUEST
└── IllegalTransitionError  an event the state table does not allow in the current status
                            (e.g. resume a running rollout, cancel a completed one)
"""

from __future__ import annotations

__all__ = ["IllegalTransitionError", "PlanError", "RolloutError"]


class RolloutError(Exception):
    """Base of every error the rollouts core raises."""


class PlanError(RolloutError, ValueError):
    """A rollout input breaks its rule; the message names the input (``waveSize``...)."""


class IllegalTransitionError(RolloutError):
    """A rollout event is not allowed in the rollout's current status."""
