"""``jobs-agent`` argument handling: name=value typing, the REST root, InfoTable tables, usage
errors and exit statuses that need no server."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from agent import cli
from agent.cli import infotable_table, parse_inputs, rest_root

pytestmark = pytest.mark.usefixtures("restore_logging")


# --- name=value typing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("n=5", 5),
        ("n=5.5", 5.5),
        ("n=-3", -3),
        ("n=true", True),
        ("n=false", False),
        ("n=null", None),
        ('n="5"', "5"),
        ("n=reboot", "reboot"),
        ("n=", ""),
        ("n=deviceId='device-0001'", "deviceId='device-0001'"),
        ("n=a=b", "a=b"),
        ('n={"properties": {"desired": {"x": 1}}}', {"properties": {"desired": {"x": 1}}}),
        ("n=[1, 2]", [1, 2]),
        ("n={not json", "{not json"),
        ("n= 7 ", 7),
    ],
)
def test_value_is_json_when_it_parses_else_a_string(arg: str, value: object) -> None:
    assert parse_inputs([arg]) == {"n": value}


def test_several_inputs_keep_their_names() -> None:
    assert parse_inputs(["methodName=reboot", "responseTimeoutInSeconds=10"]) == {
        "methodName": "reboot",
        "responseTimeoutInSeconds": 10,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["novalue"], "must be name=value"),
        (["=5"], "must be name=value"),
        (["a=1", "a=2"], "given twice"),
    ],
)
def test_bad_inputs_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_inputs(args)


@given(st.text(min_size=0, max_size=40))
def test_any_text_value_round_trips_through_its_json_reading(text: str) -> None:
    (value,) = parse_inputs([f"x={text}"]).values()
    try:
        expected = json.loads(text)
    except ValueError:
        expected = text
    assert value == expected or (value != value and expected != expected)  # NaN


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), lambda c: st.lists(c)))
def test_json_text_of_a_value_gives_the_value(value: object) -> None:
    assert parse_inputs([f"v={json.dumps(value)}"]) == {"v": value}


# --- REST root -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://h:8080", "http://h:8080/", "http://h:8080/Thingworx", "http://h:8080/Thingworx/"],
)
def test_rest_root_accepts_base_or_thingworx_url(url: str) -> None:
    assert rest_root(url) == "http://h:8080/Thingworx"


def test_rest_root_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        rest_root("ws://h:8080/Thingworx/WS")


# --- InfoTables ----------------------------------------------------------------------------------


def _render(doc: Mapping[str, Any]) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(infotable_table(doc))
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def _shape(*fields: tuple[str, str]) -> dict[str, object]:
    return {
        "fieldDefinitions": {
            name: {"name": name, "baseType": base, "ordinal": i}
            for i, (name, base) in enumerate(fields)
        }
    }


def test_one_row_is_shown_field_by_field_with_datetime_and_json_cells() -> None:
    doc = {
        "dataShape": _shape(("jobId", "STRING"), ("startTime", "DATETIME"), ("patch", "JSON")),
        "rows": [{"jobId": "j1", "startTime": 0, "patch": {"tags": {"a": 1}}}],
    }
    text = _render(doc)
    assert "j1" in text
    assert "1970-01-01T00:00:00Z" in text
    assert '{"tags":{"a":1}}' in text


def test_several_rows_keep_ordinal_order_and_drop_empty_columns() -> None:
    doc = {
        "dataShape": _shape(("b", "STRING"), ("a", "INTEGER"), ("empty", "STRING")),
        "rows": [{"a": 1, "b": "x", "empty": None}, {"a": 2, "b": "y"}],
    }
    text = _render(doc)
    assert text.index(" b ") < text.index(" a ")
    assert "empty" not in text


def test_per_device_results_show_the_telling_columns() -> None:
    doc = {
        "dataShape": _shape(
            ("deviceId", "STRING"),
            ("jobId", "STRING"),
            ("status", "STRING"),
            ("methodStatus", "INTEGER"),
            ("errorCode", "STRING"),
        ),
        "rows": [
            {"deviceId": "d1", "jobId": "J", "status": "completed", "methodStatus": 200},
            {"deviceId": "d2", "jobId": "J", "status": "failed", "errorCode": "404103"},
        ],
    }
    text = _render(doc)
    assert "d2" in text and "404103" in text and "200" in text
    assert "jobId" not in text


def test_empty_table_says_so() -> None:
    assert "no rows" in _render({"dataShape": _shape(("a", "STRING")), "rows": []})


# --- usage errors through the entry point --------------------------------------------------------


def test_call_without_app_key_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("THINGWORX_APP_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no config/agent.toml: defaults
    assert cli.main(["call", "AzureIotDeviceJobFindJobs"]) == 2
    assert "THINGWORX_APP_KEY" in capsys.readouterr().err


def test_call_with_bad_input_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["call", "S", "--app-key", "k", "a=1", "a=2"]) == 2
    assert "given twice" in capsys.readouterr().err


def test_inputs_may_follow_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # Nothing listens on this port: the inputs parsed, then the call fails to connect (exit 1).
    status = cli.main(["call", "S", "--url", "http://127.0.0.1:9", "--app-key", "k", "x=1"])
    assert status == 1
    assert "cannot reach http://127.0.0.1:9/Thingworx" in capsys.readouterr().err


def test_unknown_option_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--nope"])
    assert exit_info.value.code == 2


def test_bad_configuration_file_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "agent.toml"
    bad.write_text("[thingworx]\nurll = 'x'\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--config", str(bad), "check"])
    assert exit_info.value.code == 2
    assert "urll" in capsys.readouterr().err


def test_check_in_embedded_mode_says_what_it_would_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("JOBS_AGENT_THINGWORX__URL", "JOBS_AGENT_IOTHUB__CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "embedded mode" in out
    assert "IoT Hub emulator" in out and "ThingWorx stand-in" in out and "50" in out


def test_check_with_one_end_configured_names_the_missing_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBS_AGENT_THINGWORX__URL", "ws://127.0.0.1:9/Thingworx/WS")
    monkeypatch.setenv("JOBS_AGENT_THINGWORX__APP_KEY", "k")
    monkeypatch.delenv("JOBS_AGENT_IOTHUB__CONNECTION_STRING", raising=False)
    assert cli.main(["check"]) == 2
    out = capsys.readouterr().out
    assert "iothub.connection_string" in out
    assert "JOBS_AGENT_IOTHUB__CONNECTION_STRING" in out


@pytest.mark.parametrize("module", ["agent.cli", "agent.embedded", "agent.health"])
def test_public_names_are_listed_and_exist(module: str) -> None:
    import importlib
    import inspect

    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), name
    public = {
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module
    }
    assert public <= set(mod.__all__)


def test_check_takes_bind_to_force_the_bind_test() -> None:
    from agent.cli import build_parser as _parser

    assert _parser().parse_args(["check"]).bind is False
    assert _parser().parse_args(["check", "--bind"]).bind is True


def test_tables_never_cut_ids_at_80_columns() -> None:
    long_id = "rollout-2024-11-plant-north-wave-3-device-reboot-ab12cd34"
    doc: dict[str, Any] = {
        "dataShape": _shape(
            ("jobId", "STRING"), ("type", "STRING"), ("status", "STRING"),
            ("createdTime", "DATETIME"), ("methodName", "STRING"), ("deviceCount", "INTEGER"),
            ("succeededCount", "INTEGER"), ("failedCount", "INTEGER"), ("summary", "STRING"),
        ),
        "rows": [
            {"jobId": long_id, "type": "deviceMethod", "status": "completed",
             "createdTime": 1700000000000, "methodName": "setTelemetryInterval",
             "deviceCount": 10, "succeededCount": 8, "failedCount": 2,
             "summary": "completed: 8 succeeded, 2 failed (2 offline)"},
            {"jobId": "j2", "type": "twinUpdate", "status": "running", "deviceCount": 1},
        ],
    }  # fmt: skip
    console = Console(file=io.StringIO(), width=80)
    console.print(infotable_table(doc))
    out = console.file
    assert isinstance(out, io.StringIO)
    text = out.getvalue()
    assert long_id in text, text  # whole, on one line
    assert max(len(line) for line in text.splitlines()) <= 80
    one = {"dataShape": doc["dataShape"], "rows": doc["rows"][:1]}
    console = Console(file=io.StringIO(), width=80)
    console.print(infotable_table(one))
    assert isinstance(console.file, io.StringIO)
    assert long_id in console.file.getvalue()


def test_help_has_a_description_examples_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "Azure IoT Hub device jobs as ThingWorx remote services" in text
    assert "examples:" in text and "jobs-agent call AzureIotDeviceJobFindJobs" in text
    assert "3 completed but some devices failed" in text
