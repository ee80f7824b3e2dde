"""Plug and Play helpers against the JSON of the IoT Plug and Play conventions and the official samples.

The vectors are the documents the conventions page shows for a thermostat component and for the
default component (``targetTemperature`` acknowledged at desired ``$version`` 3), and what the
official Python samples' ``pnp_helper`` builds for component properties and telemetry.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aioiothub import Message, Twin, pnp
from aioiothub.protocol.device import DeviceProtocol
from aioiothub.protocol.topics import parse_telemetry_topic

pytestmark = pytest.mark.anyio

# The conventions page: a desired write to a component, and the device's acknowledgement of it.
DESIRED_COMPONENT_WRITE = {"thermostat1": {"__t": "c", "targetTemperature": 23}, "$version": 3}
REPORTED_COMPONENT_ACK = {
    "thermostat1": {"__t": "c", "targetTemperature": {"value": 23, "ac": 200, "av": 3, "ad": "complete"}}
}
# The same for a property of the default component.
DESIRED_ROOT_WRITE = {"targetTemperature": 23, "$version": 3}
REPORTED_ROOT_ACK = {"targetTemperature": {"value": 23, "ac": 200, "av": 3, "ad": "complete"}}


class Sent:
    """A stand-in for ``update_reported_properties``: records patches, answers with a version."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def __call__(self, patch: dict[str, Any]) -> int:
        self.patches.append(patch)
        return 10 + len(self.patches)


def test_component_properties_are_nested_under_the_component_with_the_marker() -> None:
    # pnp_helper.create_reported_properties("thermostat1", maxTempSinceLastReboot=98.34)
    assert pnp.reported_properties({"maxTempSinceLastReboot": 98.34}, component="thermostat1") == {
        "thermostat1": {"__t": "c", "maxTempSinceLastReboot": 98.34}
    }
    assert pnp.reported_properties({"serialNumber": "SN-1"}) == {"serialNumber": "SN-1"}


def test_an_acknowledgement_has_exactly_the_convention_s_keys_in_order() -> None:
    response = pnp.WritablePropertyResponse(23, ac=200, av=3, ad="complete")
    assert json.dumps(response.as_dict()) == '{"value": 23, "ac": 200, "av": 3, "ad": "complete"}'
    assert pnp.reported_properties({"targetTemperature": response}, component="thermostat1") == REPORTED_COMPONENT_ACK
    assert pnp.reported_properties({"targetTemperature": response}) == REPORTED_ROOT_ACK
    assert pnp.WritablePropertyResponse(1, ac=400, av=7).as_dict() == {"value": 1, "ac": 400, "av": 7}


def test_a_device_default_is_acknowledged_with_203_and_version_0() -> None:
    assert pnp.WritablePropertyResponse.device_default(20.0, "initial").as_dict() == {
        "value": 20.0,
        "ac": 203,
        "av": 0,
        "ad": "initial",
    }


@pytest.mark.parametrize(
    ("arguments", "error", "text"),
    [
        ({"ac": 99, "av": 1}, ValueError, "ac must be an HTTP status code"),
        ({"ac": 600, "av": 1}, ValueError, "ac must be an HTTP status code"),
        ({"ac": True, "av": 1}, ValueError, "ac must be"),
        ({"ac": 200, "av": -1}, ValueError, "av must be a desired $version"),
        ({"ac": 200, "av": "3"}, ValueError, "av must be"),
        ({"ac": 200, "av": 3, "ad": 5}, TypeError, "ad must be a str"),
    ],
)
def test_acknowledgement_fields_are_checked(arguments: dict[str, Any], error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text.replace("$", r"\$")):
        pnp.WritablePropertyResponse(1, **arguments)


@pytest.mark.parametrize("component", ["", "1thermostat", "thermo-stat", "thermostat_", "x" * 65, "café"])
def test_component_names_must_be_dtdl_names(component: str) -> None:
    with pytest.raises(ValueError, match="component must be a DTDL name"):
        pnp.reported_properties({"a": 1}, component=component)
    with pytest.raises(ValueError, match="component must be a DTDL name"):
        pnp.telemetry_message({"a": 1}, component=component)


def test_component_telemetry_goes_out_with_sub_on_the_topic() -> None:
    message = pnp.telemetry_message({"temperature": 21.5}, component="thermostat1", message_id="m1")
    assert isinstance(message, Message)
    assert (message.body, message.content_type, message.content_encoding) == (
        b'{"temperature":21.5}',
        "application/json",
        "utf-8",
    )
    publish = DeviceProtocol("dev1").telemetry(message.body, message.wire_properties())
    assert publish.topic == (
        "devices/dev1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.sub=thermostat1"
    )
    assert parse_telemetry_topic(publish.topic).properties["$.sub"] == "thermostat1"
    assert pnp.telemetry_message({"workingSet": 1024}).component is None


def test_a_component_write_becomes_one_request_per_property_with_the_version() -> None:
    requests = pnp.split_desired_patch(DESIRED_COMPONENT_WRITE)
    assert [(r.component, r.name, r.value, r.version) for r in requests] == [
        ("thermostat1", "targetTemperature", 23, 3)
    ]
    assert requests[0].response(200, "complete") == REPORTED_COMPONENT_ACK
    (root,) = pnp.split_desired_patch(DESIRED_ROOT_WRITE)
    assert (root.component, root.name, root.value, root.version) == (None, "targetTemperature", 23, 3)
    assert root.response(200, "complete") == REPORTED_ROOT_ACK


def test_a_patch_mixing_components_and_root_properties_is_split_in_order() -> None:
    patch = {
        "thermostat1": {"__t": "c", "targetTemperature": 23, "hysteresis": 0.5},
        "thermostat2": {"__t": "c", "targetTemperature": 19},
        "settings": {"mode": "eco"},  # an object-valued property of the default component
        "$version": 8,
    }
    assert [(r.component, r.name, r.value, r.version) for r in pnp.split_desired_patch(patch)] == [
        ("thermostat1", "targetTemperature", 23, 8),
        ("thermostat1", "hysteresis", 0.5, 8),
        ("thermostat2", "targetTemperature", 19, 8),
        (None, "settings", {"mode": "eco"}, 8),
    ]


def test_components_named_by_the_model_are_recognised_without_the_marker() -> None:
    patch = {"thermostat1": {"targetTemperature": 23}, "deviceInformation": None, "$version": 4}
    requests = pnp.split_desired_patch(patch, components={"thermostat1", "deviceInformation"})
    assert [(r.component, r.name, r.value) for r in requests] == [("thermostat1", "targetTemperature", 23)]
    # Without being told, an unmarked object is a property of the default component.
    assert [(r.component, r.name) for r in pnp.split_desired_patch(patch)] == [
        (None, "thermostat1"),
        (None, "deviceInformation"),
    ]


def test_a_rejection_can_report_the_value_the_device_keeps() -> None:
    (request,) = pnp.split_desired_patch(DESIRED_COMPONENT_WRITE)
    assert request.response(400, "out of range", value=20) == {
        "thermostat1": {"__t": "c", "targetTemperature": {"value": 20, "ac": 400, "av": 3, "ad": "out of range"}}
    }
    with pytest.raises(TypeError, match="unexpected keyword argument 'version'"):
        request.response(200, version=9)


async def test_respond_sends_the_acknowledgement_and_may_be_repeated() -> None:
    send = Sent()
    (request,) = pnp.split_desired_patch(DESIRED_COMPONENT_WRITE, send=send)
    assert await request.respond(202, "applying") == 11
    assert await request.respond(200, "complete") == 12
    assert request.responded
    assert send.patches[1] == REPORTED_COMPONENT_ACK
    assert send.patches[0]["thermostat1"]["targetTemperature"]["ac"] == 202
    with pytest.raises(ValueError, match="ac must be"):
        await request.respond(1000)
    assert len(send.patches) == 2


async def test_a_request_split_without_a_sender_says_how_to_answer_it() -> None:
    (request,) = pnp.split_desired_patch(DESIRED_ROOT_WRITE)
    with pytest.raises(RuntimeError, match=r"send request\.response\(\)"):
        await request.respond(200)


def test_pending_properties_are_those_not_acknowledged_with_their_value() -> None:
    twin = Twin(
        desired={
            "thermostat1": {"__t": "c", "targetTemperature": 23},
            "thermostat2": {"__t": "c", "targetTemperature": 19},
            "fanSpeed": 2,
            "mode": "eco",
            "$version": 6,
        },
        reported={
            "thermostat1": {"__t": "c", "targetTemperature": {"value": 23, "ac": 200, "av": 5}},
            "thermostat2": {"__t": "c", "targetTemperature": {"value": 21, "ac": 400, "av": 6}},
            "fanSpeed": 2,  # reported, but not as an acknowledgement
            "$version": 9,
        },
    )
    pending = pnp.pending_writable_properties(twin)
    assert [(r.component, r.name, r.value, r.version) for r in pending] == [
        ("thermostat2", "targetTemperature", 19, 6),
        (None, "fanSpeed", 2, 6),
        (None, "mode", "eco", 6),
    ]
