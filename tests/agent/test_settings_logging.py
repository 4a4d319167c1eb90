"""Settings sources and priorities; secrets never rendered by the logging pipeline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from agent import cli
from agent.settings import load_settings
from logsetup import configure_logging

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_loads_and_means_embedded_mode() -> None:
    settings = load_settings(REPO / "config" / "agent.toml")
    assert settings.thingworx.gateway_thing == "AzureIotHub"
    assert settings.jobs.default_connect_timeout == 30
    assert settings.embedded_mode


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text('[thingworx]\nurl = "ws://file"\n[jobs]\ndefault_connect_timeout = 12\n')
    monkeypatch.setenv("JOBS_AGENT_THINGWORX__URL", "ws://env")
    settings = load_settings(cfg)
    assert settings.thingworx.url == "ws://env"
    assert settings.jobs.default_connect_timeout == 12
    assert not settings.embedded_mode


def test_secret_from_file_and_never_in_repr(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("s3cr3t-app-key\n")
    cfg = tmp_path / "a.toml"
    cfg.write_text(f'[thingworx]\napp_key_file = "{secret}"\n')
    settings = load_settings(cfg)
    assert settings.thingworx.app_key.get_secret_value() == "s3cr3t-app-key"
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    "body",
    [
        "[jobs]\ndefault_connect_timeout = 301\n",
        "[jobs]\nunknown_key = 1\n",
        '[thingworx]\ngateway_thing = ""\n',
    ],
)
def test_bad_configuration_is_refused_naming_the_key(tmp_path: Path, body: str) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text(body)
    with pytest.raises(ValidationError) as info:
        load_settings(cfg)
    key = body.split("\n")[1].split("=")[0].strip()
    assert key in str(info.value) or "Thing name" in str(info.value)


def test_logging_redacts_secret_keys_and_values() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    log = structlog.get_logger()
    log.info(
        "connecting",
        app_key="abc123",
        detail="HostName=h;SharedAccessKeyName=owner;SharedAccessKey=c2VjcmV0",
        header="SharedAccessSignature sr=h&sig=xyz&se=1",
        nested={"password": "p", "ok": "visible"},
    )
    line = json.loads(out.getvalue().splitlines()[-1])
    text = json.dumps(line)
    for secret in ("abc123", "c2VjcmV0", "sig=xyz", '"p"'):
        assert secret not in text
    assert line["nested"]["ok"] == "visible"
    assert line["event"] == "connecting"


def test_json_logs_carry_the_logger_name() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    structlog.get_logger("agent.channel").info("bound")
    structlog.get_logger("emulator.iothub").info("job completed")
    agent, emulator = (json.loads(x) for x in out.getvalue().splitlines()[-2:])
    assert (agent["logger"], agent["event"]) == ("agent.channel", "bound")
    assert emulator["logger"] == "emulator.iothub"


@pytest.mark.parametrize(
    ("body", "env", "line"),
    [
        (
            "[jobs]\ndefault_conect_timeout = 5\n",
            {},
            "unknown setting jobs.default_conect_timeout (jobs.default_conect_timeout in {cfg}); "
            "did you mean jobs.default_connect_timeout "
            "(JOBS_AGENT_JOBS__DEFAULT_CONNECT_TIMEOUT)?",
        ),
        (
            "",
            {"JOBS_AGENT_JOBS__DEFAULT_CONNECT_TIMEOUT": "500"},
            "setting jobs.default_connect_timeout (environment variable "
            "JOBS_AGENT_JOBS__DEFAULT_CONNECT_TIMEOUT): input should be less than or equal to "
            "300; got '500'",
        ),
    ],
)
def test_a_wrong_setting_is_one_line_naming_key_variable_and_closest(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    body: str,
    env: dict[str, str],
    line: str,
) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text(body)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        cli.main(["--config", str(cfg), "check"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"jobs-agent: configuration error: {line.format(cfg=cfg)}"]
    assert "pydantic" not in err and "http" not in err
