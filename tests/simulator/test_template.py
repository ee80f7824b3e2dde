"""Payload templates and the messages built from them: exact renderings and clear refusals."""

from __future__ import annotations

import json
import re

import pytest

from aioiothub.simulator.template import DEFAULT_TEMPLATE, DEFAULT_VARIABLES, PayloadTemplate, Variable
from aioiothub.simulator.traffic import MessageFactory, TrafficSettings


def test_built_in_variables_fill_in_device_and_counter() -> None:
    template = PayloadTemplate('{"id": "$.DeviceId", "n": $.Counter}')
    assert template.render("sim-7", 3) == '{"id": "sim-7", "n": 3}'


def test_time_epoch_random_and_guid_are_well_formed() -> None:
    template = PayloadTemplate('{"t": "$.Time", "e": $.Epoch, "r": $.Random, "g": "$.Guid"}')
    value = json.loads(template.render("d", 1))
    assert value["t"].endswith("Z")
    assert len(value["t"]) == len("2026-01-01T00:00:00.000Z")
    assert value["e"] > 1_700_000_000
    assert 0 <= value["r"] < 1
    assert len(value["g"]) == 36


def test_sequence_steps_and_wraps_per_message() -> None:
    template = PayloadTemplate("$.Level", '[{"name": "Level", "min": 0, "max": 10, "step": 5}]')
    assert [template.render("d", counter) for counter in range(1, 6)] == ["0", "5", "10", "0", "5"]


def test_sequence_without_step_counts_by_one() -> None:
    template = PayloadTemplate("$.N", '[{"name": "N", "min": 100, "max": 102}]')
    assert [template.render("d", counter) for counter in range(1, 5)] == ["100", "101", "102", "100"]


def test_value_lists_cycle_in_order() -> None:
    template = PayloadTemplate('"$.Engine"', '[{"name": "Engine", "values": ["on", "off"]}]')
    assert [template.render("d", counter) for counter in (1, 2, 3)] == ['"on"', '"off"', '"on"']


def test_non_string_values_are_json_literals() -> None:
    template = PayloadTemplate("$.V", '[{"name": "V", "values": [true, null, 2.5]}]')
    assert [template.render("d", counter) for counter in (1, 2, 3)] == ["true", "null", "2.5"]


def test_random_integer_range_stays_inside_its_bounds() -> None:
    template = PayloadTemplate("$.T", '[{"name": "T", "random": true, "min": 3, "max": 5}]', seed=1)
    values = {int(template.render("d", counter)) for counter in range(1, 200)}
    assert values == {3, 4, 5}


def test_random_float_range_stays_inside_its_bounds() -> None:
    template = PayloadTemplate("$.T", '[{"name": "T", "random": true, "min": 1.5, "max": 2.0}]', seed=1)
    values = [float(template.render("d", counter)) for counter in range(1, 200)]
    assert min(values) >= 1.5
    assert max(values) <= 2.0


def test_random_value_list_picks_from_the_list() -> None:
    template = PayloadTemplate("$.M", '[{"name": "M", "values": ["a", "b"], "random": true}]', seed=3)
    assert {template.render("d", counter) for counter in range(1, 100)} == {"a", "b"}


def test_a_longer_variable_name_is_not_cut_at_a_shorter_one() -> None:
    template = PayloadTemplate(
        "$.Temp $.Temperature",
        '[{"name": "Temp", "values": ["short"]}, {"name": "Temperature", "values": ["long"]}]',
    )
    assert template.render("d", 1) == "short long"


def test_the_default_template_renders_json() -> None:
    value = json.loads(PayloadTemplate(DEFAULT_TEMPLATE, DEFAULT_VARIABLES).render("sim-1", 4))
    assert value["deviceId"] == "sim-1"
    assert value["counter"] == 4
    assert 18 <= value["temperature"] <= 28


@pytest.mark.parametrize(
    ("text", "variables", "message"),
    [
        ("$.Nope", "[]", "undeclared variables: $.Nope"),
        ("x", "{", "variables must be a JSON list"),
        ("x", "{}", "variables must be a JSON list of objects"),
        ("x", '[{"name": "A"}]', "give 'min' and 'max', or 'values'"),
        ("x", '[{"name": "A", "min": 5, "max": 1}]', "'min' is greater than 'max'"),
        ("x", '[{"name": "A", "min": 0, "max": 1, "step": 0}]', "'step' must be positive"),
        ("x", '[{"name": "A", "values": []}]', "'values' must be a non-empty list"),
        ("x", '[{"name": "A", "values": [1], "min": 0}]', "either 'values' or 'min'/'max'/'step'"),
        ("x", '[{"name": "DeviceId", "values": [1]}]', "'DeviceId' is a built-in variable"),
        ("x", '[{"name": "1A", "values": [1]}]', "'name' must be"),
        ("x", '[{"name": "A", "values": [1], "colour": 2}]', "unknown keys ['colour']"),
        ("x", '[{"name": "A", "values": [1]}, {"name": "A", "values": [2]}]', "declared twice"),
        ("x", '[{"name": "A", "min": "0", "max": 1}]', "'min' must be a number"),
        ("", "[]", "template must be a non-empty string"),
    ],
)
def test_malformed_templates_are_refused_with_the_reason(text: str, variables: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PayloadTemplate(text, variables)


def test_variable_declaration_round_trip() -> None:
    variable = Variable.from_json({"name": "S", "min": 0, "max": 4, "step": 2})
    assert variable == Variable("S", minimum=0, maximum=4, step=2)


def test_message_factory_sets_json_content_type_and_templated_properties() -> None:
    factory = MessageFactory(
        TrafficSettings(template='{"n": $.Counter}', variables="[]", properties={"device": "$.DeviceId", "k": "v"})
    )
    message = factory.build("sim-3", 2)
    assert message.body == b'{"n": 2}'
    assert dict(message.properties) == {"device": "sim-3", "k": "v"}
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"


def test_fixed_size_payloads_have_exactly_that_size() -> None:
    factory = MessageFactory(TrafficSettings(payload_size=1000))
    message = factory.build("sim-1", 1)
    assert len(message.body) == 1000
    assert message.content_type is None


def test_a_template_too_large_for_iot_hub_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="IoT Hub accepts at most 262144"):
        MessageFactory(TrafficSettings(template="x" * 262_145, variables="[]"))


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"interval": 0}, "interval"),
        ({"jitter": 1.5}, "jitter"),
        ({"messages": 0}, "messages"),
        ({"qos": 2}, "qos"),
        ({"payload_size": 300_000}, "payload_size"),
        ({"report_interval": -1}, "report_interval"),
    ],
)
def test_traffic_settings_name_the_bad_argument(options: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        TrafficSettings(**options)  # type: ignore[arg-type]
