"""``python -m agent.cli``: the same as the ``jobs-agent`` command."""

from __future__ import annotations

from agent.cli import main

raise SystemExit(main())
