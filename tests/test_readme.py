"""README.md stays in step with the code: the two commands, every settings key, the services."""

from __future__ import annotations

from pathlib import Path

from agent.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_shows_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README


def test_every_settings_key_is_in_the_configuration_reference() -> None:
    missing = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert model is not None
        for key in model.model_fields:
            env = f"JOBS_AGENT_{section.upper()}__{key.upper()}"
            if f"`{section}.{key}`" not in README or f"`{env}`" not in README:
                missing.append(f"{section}.{key}")
    assert missing == []


def test_every_job_service_is_named() -> None:
    for name in (
        "AzureIotDeviceJobScheduleTwinUpdateJob",
        "AzureIotDeviceJobScheduleDeviceMethodJob",
        "AzureIotDeviceJobGetJob",
        "AzureIotDeviceJobFindJobs",
        "AzureIotDeviceJobCancelJob",
        "AzureIotDeviceJobQueryJobResults",
    ):
        assert name in README
