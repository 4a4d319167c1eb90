"""The edge agent that runs Azure IoT Hub device jobs as ThingWorx remote services.

``__version__`` is the installed distribution's version (``azure-iot-jobs-agent``), or, when the
package runs from a source tree that is not installed, the version in ``pyproject.toml``.
"""

from __future__ import annotations

import pathlib
import re
from importlib import metadata

__all__ = ["DISTRIBUTION", "__version__"]

DISTRIBUTION = "azure-iot-jobs-agent"
"""The distribution (pip) name of this package."""


def _version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            found = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject.read_text("utf-8"))
        except OSError:
            found = None
        return found.group(1) if found else "0+unknown"


__version__ = _version()
