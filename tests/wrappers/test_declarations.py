"""Wrapper declarations: the shipped catalogue, refusals naming file/entry/problem, payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import wrappers
from agent.alwayson import BaseType
from wrappers import WrapperConfigError, build_payload, load_wrappers, parse_wrappers

CATALOGUE = Path(__file__).resolve().parents[2] / "config" / "wrappers"


def test_shipped_catalogue() -> None:
    declared = {d.name: d for d in load_wrappers(CATALOGUE)}
    reboot = declared["Reboot"]
    assert reboot.method == "reboot"
    (delay,) = reboot.inputs
    assert (delay.name, delay.base_type, delay.default, delay.required) == (
        "delaySeconds",
        BaseType.INTEGER,
        0,
        False,
    )
    interval = declared["SetTelemetryInterval"]
    assert interval.method == "setTelemetryInterval"
    assert interval.inputs[0].required and interval.inputs[0].base_type is BaseType.INTEGER


ENTRY = '[[service]]\nname = "Blink"\nmethod = "blink"\n'


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[[service]\n", "not valid TOML"),
        ('[[service]]\nname = "Blink"\n', "#1 (Blink): method: Field required"),
        (ENTRY + 'colour = "red"\n', "colour: Extra inputs are not permitted"),
        ('[[service]]\nname = "9lives"\nmethod = "m"\n', "name: String should match"),
        ('[[service]]\nname = "AzureIotDeviceJobX"\nmethod = "m"\n', "belong to the job"),
        ('[[service]]\nname = "B"\nmethod = "has space"\n', "method: must be"),
        # Whole strings: a trailing newline is not accepted by any name or method pattern.
        ('[[service]]\nname = "B"\nmethod = "reboot\\n"\n', "method: must be"),
        ('[[service]]\nname = "Blink\\n"\nmethod = "m"\n', "name: String should match"),
        (
            ENTRY + '[[service.inputs]]\nname = "n\\n"\ntype = "STRING"\n',
            "inputs.0.name: String should match",
        ),
        (ENTRY + '[[service.inputs]]\nname = "n"\ntype = "FLOAT"\n', "inputs.0.type"),
        (
            ENTRY + '[[service.inputs]]\nname = "n"\ntype = "INTEGER"\ndefault = "x"\n',
            "does not fit INTEGER",
        ),
        (
            ENTRY + '[[service.inputs]]\nname = "n"\ntype = "INTEGER"\ndefault = 1\n'
            "required = true\n",
            "not both",
        ),
        (
            ENTRY + '[[service.inputs]]\nname = "jobId"\ntype = "STRING"\n',
            "already has",
        ),
        (
            ENTRY + '[[service.inputs]]\nname = "n"\ntype = "STRING"\n'
            '[[service.inputs]]\nname = "n"\ntype = "STRING"\n',
            "declared twice",
        ),
        # The <Name>Rollout form's own inputs are taken too.
        (
            ENTRY + '[[service.inputs]]\nname = "waveSize"\ntype = "INTEGER"\n',
            "already has",
        ),
        (
            ENTRY + '[[service.inputs]]\nname = "devices"\ntype = "JSON"\n',
            "already has",
        ),
    ],
)
def test_wrong_declarations_name_file_entry_problem(text: str, words: str) -> None:
    with pytest.raises(WrapperConfigError) as caught:
        parse_wrappers(text, "conf/x.toml")
    message = str(caught.value)
    assert message.startswith("conf/x.toml: ") and words in message, message


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(ENTRY)
    (tmp_path / "b.toml").write_text(ENTRY)
    with pytest.raises(WrapperConfigError, match=r"b\.toml: \[\[service\]\] #1 \(Blink\).*a\.toml"):
        load_wrappers(tmp_path)
    assert load_wrappers(tmp_path / "missing") == []


def test_a_name_taken_by_another_wrappers_rollout_form(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(ENTRY)
    (tmp_path / "b.toml").write_text('[[service]]\nname = "BlinkRollout"\nmethod = "m"\n')
    with pytest.raises(WrapperConfigError, match=r"b\.toml: BlinkRollout: .*rollout form of Blink"):
        load_wrappers(tmp_path)


def test_payload_is_the_typed_inputs_exactly() -> None:
    (declaration,) = parse_wrappers(
        ENTRY
        + '[[service.inputs]]\nname = "at"\ntype = "DATETIME"\n'
        + '[[service.inputs]]\nname = "level"\ntype = "NUMBER"\ndefault = 2\n'
        + '[[service.inputs]]\nname = "extra"\ntype = "JSON"\n',
        "x.toml",
    )
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    payload = build_payload(declaration, {"at": when, "level": 2.0, "responseTimeoutInSeconds": 30})
    assert payload == {"at": "2026-01-02T03:04:05Z", "level": 2.0}


def test_all_is_honest() -> None:
    for name in wrappers.__all__:
        assert hasattr(wrappers, name)
