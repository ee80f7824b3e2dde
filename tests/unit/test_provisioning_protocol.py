"""The sans-IO DPS registration state machine, with exact topics and bodies."""

from __future__ import annotations

import json

import pytest

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.provisioning import (
    DEFAULT_RETRY_AFTER,
    RegistrationAssigned,
    RegistrationProtocol,
    RegistrationRefused,
    RegistrationState,
    RetryLater,
)

OPERATION = "4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d"
ASSIGNING = json.dumps({"operationId": OPERATION, "status": "assigning"}).encode()
ASSIGNED = json.dumps(
    {
        "operationId": OPERATION,
        "status": "assigned",
        "registrationState": {
            "registrationId": "myRegistrationId",
            "assignedHub": "contoso.azure-devices.net",
            "deviceId": "dev-7",
            "status": "assigned",
            "substatus": "initialAssignment",
            "createdDateTimeUtc": "2024-01-01T00:00:00Z",
            "lastUpdatedDateTimeUtc": "2024-01-01T00:00:01Z",
            "etag": "ImUi",
            "payload": {"tier": "gold"},
        },
    }
).encode()


def started(payload: object = None) -> RegistrationProtocol:
    protocol = RegistrationProtocol("myRegistrationId")
    protocol.begin(payload)
    return protocol


def test_register_request_is_the_documented_topic_and_body() -> None:
    protocol = RegistrationProtocol("myRegistrationId")
    publish = protocol.begin({"modelId": "dtmi:com:example:Thermostat;1"})
    assert publish.topic == "$dps/registrations/PUT/iotdps-register/?$rid=1"
    assert publish.qos == 1
    assert json.loads(publish.payload) == {
        "registrationId": "myRegistrationId",
        "payload": {"modelId": "dtmi:com:example:Thermostat;1"},
    }
    assert protocol.state is RegistrationState.REQUESTING
    assert protocol.pending_request_id == "1"


def test_register_without_payload_sends_only_the_registration_id() -> None:
    publish = RegistrationProtocol("myRegistrationId").begin()
    assert publish.payload == b'{"registrationId":"myRegistrationId"}'


def test_assigning_answer_asks_to_poll_after_retry_after() -> None:
    protocol = started()
    event = protocol.receive("$dps/registrations/res/202/?$rid=1&retry-after=3", ASSIGNING)
    assert isinstance(event, RetryLater)
    assert (event.status, event.delay, event.request_id, event.transient_error) == (202, 3.0, "1", False)
    assert protocol.state is RegistrationState.WAITING
    assert protocol.pending_request_id is None
    assert protocol.operation_id == OPERATION
    poll = protocol.next_request()
    assert poll.topic == f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={OPERATION}"
    assert poll.payload == b" "
    assert protocol.pending_request_id == "2"


def test_retry_after_defaults_to_two_seconds() -> None:
    protocol = started()
    event = protocol.receive("$dps/registrations/res/202/?$rid=1", ASSIGNING)
    assert isinstance(event, RetryLater)
    assert event.delay == DEFAULT_RETRY_AFTER == 2.0


def test_retry_after_in_any_order_of_the_query() -> None:
    protocol = started()
    event = protocol.receive("$dps/registrations/res/202/?retry-after=5&$rid=1", ASSIGNING)
    assert isinstance(event, RetryLater)
    assert event.delay == 5.0


def test_assigned_answer_completes_with_the_registration_state() -> None:
    protocol = started()
    protocol.receive("$dps/registrations/res/202/?$rid=1&retry-after=0", ASSIGNING)
    protocol.next_request()
    event = protocol.receive("$dps/registrations/res/200/?$rid=2", ASSIGNED)
    assert isinstance(event, RegistrationAssigned)
    state = event.operation.registration_state
    assert state is not None
    assert (state.assigned_hub, state.device_id) == ("contoso.azure-devices.net", "dev-7")
    assert state.payload == {"tier": "gold"}
    assert protocol.state is RegistrationState.DONE


def test_assigned_in_the_first_answer_needs_no_poll() -> None:
    protocol = started()
    assert isinstance(protocol.receive("$dps/registrations/res/200/?$rid=1", ASSIGNED), RegistrationAssigned)


@pytest.mark.parametrize("status", ["failed", "disabled", "somethingElse"])
def test_a_final_status_other_than_assigned_refuses(status: str) -> None:
    protocol = started()
    body = {
        "operationId": OPERATION,
        "status": status,
        "trackingId": "t-9",
        "registrationState": {"registrationId": "myRegistrationId", "status": status, "errorCode": 401002,
                              "errorMessage": "no"},
    }
    event = protocol.receive("$dps/registrations/res/200/?$rid=1", json.dumps(body).encode())
    assert isinstance(event, RegistrationRefused)
    assert (event.status, event.operation.status, event.operation.error_code) == (200, status, 401002)
    assert event.operation.tracking_id == "t-9"


def test_an_error_status_refuses_with_code_message_and_tracking_id() -> None:
    protocol = started()
    body = b'{"errorCode":401002,"trackingId":"abc","message":"The device is unauthorized."}'
    event = protocol.receive("$dps/registrations/res/401/?$rid=1", body)
    assert isinstance(event, RegistrationRefused)
    assert (event.status, event.operation.error_code, event.operation.tracking_id) == (401, 401002, "abc")
    assert protocol.state is RegistrationState.DONE


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_transient_error_before_any_operation_repeats_the_register_request(status: int) -> None:
    protocol = started({"a": 1})
    event = protocol.receive(f"$dps/registrations/res/{status}/?$rid=1&retry-after=7", b"")
    assert isinstance(event, RetryLater)
    assert (event.delay, event.transient_error) == (7.0, True)
    again = protocol.next_request()
    assert again.topic == "$dps/registrations/PUT/iotdps-register/?$rid=2"
    assert json.loads(again.payload) == {"registrationId": "myRegistrationId", "payload": {"a": 1}}


def test_a_transient_error_while_polling_repeats_the_poll() -> None:
    protocol = started()
    protocol.receive("$dps/registrations/res/202/?$rid=1&retry-after=0", ASSIGNING)
    protocol.next_request()
    body = b'{"errorCode":429001,"trackingId":"x","message":"throttled"}'
    event = protocol.receive("$dps/registrations/res/429/?$rid=2&retry-after=1", body)
    assert isinstance(event, RetryLater)
    assert protocol.next_request().topic == (
        f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=3&operationId={OPERATION}"
    )


def test_an_answer_to_another_request_is_ignored() -> None:
    protocol = started()
    assert protocol.receive("$dps/registrations/res/200/?$rid=99", ASSIGNED) is None
    assert protocol.pending_request_id == "1"
    assert protocol.state is RegistrationState.REQUESTING


def test_an_abandoned_request_leaves_nothing_pending_and_its_late_answer_is_ignored() -> None:
    protocol = started()
    protocol.abandon()
    assert protocol.pending_request_id is None
    assert protocol.state is RegistrationState.IDLE
    assert protocol.receive("$dps/registrations/res/200/?$rid=1", ASSIGNED) is None
    assert protocol.begin().topic == "$dps/registrations/PUT/iotdps-register/?$rid=2"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"status":"assigning"}', b'{"operationId":"x","status":"assigned"}'],
    ids=["not-json", "not-an-object", "no-operation-id", "assigned-without-state"],
)
def test_a_malformed_answer_to_the_pending_request_ends_the_registration(body: bytes) -> None:
    protocol = started()
    with pytest.raises(ProtocolError):
        protocol.receive("$dps/registrations/res/200/?$rid=1", body)
    assert protocol.state is RegistrationState.DONE
    assert protocol.pending_request_id is None


@pytest.mark.parametrize(
    "topic",
    ["$iothub/twin/res/200/?$rid=1", "$dps/registrations/res/abc/?$rid=1", "$dps/registrations/res/200/?x=1"],
)
def test_a_message_on_a_topic_that_is_no_dps_answer_raises_and_changes_nothing(topic: str) -> None:
    protocol = started()
    with pytest.raises(ProtocolError):
        protocol.receive(topic, ASSIGNED)
    assert protocol.pending_request_id == "1"
    assert protocol.state is RegistrationState.REQUESTING


def test_next_request_needs_a_retry_to_wait_for() -> None:
    protocol = started()
    with pytest.raises(RuntimeError, match="requesting"):
        protocol.next_request()


@pytest.mark.parametrize(("registration_id", "error"), [("", ValueError), ("a/b", ValueError), (7, TypeError)])
def test_an_invalid_registration_id_is_refused_at_once(registration_id: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="registration_id"):
        RegistrationProtocol(registration_id)  # type: ignore[arg-type]


def test_a_payload_that_is_not_json_is_refused_before_anything_is_sent() -> None:
    protocol = RegistrationProtocol("dev1")
    with pytest.raises(ValueError, match="payload"):
        protocol.begin({"bad": object()})
    assert protocol.pending_request_id is None
