"""Tests for DPS registration bodies (protocol.md section 3)."""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.dps import (
    RegistrationOperation,
    RegistrationRequest,
    RegistrationState,
    parse_registration_request,
    parse_registration_response,
    registration_request_body,
    registration_response_body,
)

ASSIGNED = {
    "operationId": "4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d",
    "status": "assigned",
    "registrationState": {
        "registrationId": "myRegistrationId",
        "createdDateTimeUtc": "2024-01-02T03:04:05.1234567Z",
        "assignedHub": "contoso.azure-devices.net",
        "deviceId": "myRegistrationId",
        "status": "assigned",
        "substatus": "initialAssignment",
        "lastUpdatedDateTimeUtc": "2024-01-02T03:04:06.7654321Z",
        "etag": "IjAxMDBmZjY0LTAwMDAtMDMwMC0wMDAwLTY1OTM3ZmJlMDAwMCI=",
        "payload": {"hello": "world"},
    },
}

identities = st.text(alphabet=string.ascii_letters + string.digits + "-.:_", min_size=1, max_size=128)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=10,
)
optional_text = st.none() | st.text(min_size=1)


# --- register request ---------------------------------------------------------------------------


def test_registration_request_body() -> None:
    assert registration_request_body("myRegistrationId") == b'{"registrationId":"myRegistrationId"}'
    body = registration_request_body("dev-1", {"modelId": "dtmi:com:example:Thermostat;1"})
    assert json.loads(body) == {"registrationId": "dev-1", "payload": {"modelId": "dtmi:com:example:Thermostat;1"}}
    assert parse_registration_request(body) == RegistrationRequest(
        "dev-1", {"modelId": "dtmi:com:example:Thermostat;1"}
    )
    assert parse_registration_request(b'{"registrationId":"r"}') == RegistrationRequest("r", None)


def test_registration_request_body_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^registration_id: "):
        registration_request_body("a/b")
    with pytest.raises(TypeError, match=r"^registration_id: "):
        registration_request_body(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^payload: not representable as JSON"):
        registration_request_body("r", {"x": object()})
    with pytest.raises(ValueError, match=r"^payload: not representable as JSON"):
        registration_request_body("r", float("nan"))


@given(registration_id=identities, payload=json_values)
def test_registration_request_round_trip(registration_id: str, payload: Any) -> None:
    parsed = parse_registration_request(registration_request_body(registration_id, payload))
    assert parsed == RegistrationRequest(registration_id, payload)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"registrationId"',
        b"{}",
        b'{"registrationId": 5}',
        b'{"registrationId": ""}',
        b'{"registrationId": "r", "payload": NaN}',
        b"\xff\xfe{}",
        b"[" * 100_000,
    ],
)
def test_malformed_register_requests(body: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"malformed DPS register request"):
        parse_registration_request(body)


# --- register / poll responses ------------------------------------------------------------------


def test_assigning_response() -> None:
    body = b'{"operationId":"4.abc","status":"assigning"}'
    assert parse_registration_response(202, body) == RegistrationOperation("4.abc", "assigning", None, None, None)


def test_assigned_response() -> None:
    operation = parse_registration_response(200, json.dumps(ASSIGNED).encode())
    assert operation == RegistrationOperation(
        operation_id="4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d",
        status="assigned",
        registration_state=RegistrationState(
            registration_id="myRegistrationId",
            assigned_hub="contoso.azure-devices.net",
            device_id="myRegistrationId",
            status="assigned",
            substatus="initialAssignment",
            payload={"hello": "world"},
            created="2024-01-02T03:04:05.1234567Z",
            last_updated="2024-01-02T03:04:06.7654321Z",
            etag="IjAxMDBmZjY0LTAwMDAtMDMwMC0wMDAwLTY1OTM3ZmJlMDAwMCI=",
        ),
        error_code=None,
        error_message=None,
    )
    assert json.loads(registration_response_body(operation)) == ASSIGNED


def test_failed_registration_reports_the_error_from_the_state() -> None:
    body = {
        "operationId": "4.x",
        "status": "failed",
        "registrationState": {
            "registrationId": "r",
            "status": "failed",
            "errorCode": 400209,
            "errorMessage": "Custom allocation failed",
            "lastUpdatedDateTimeUtc": "2024-01-01T00:00:00Z",
        },
    }
    operation = parse_registration_response(200, json.dumps(body).encode())
    assert (operation.status, operation.error_code, operation.error_message) == (
        "failed",
        400209,
        "Custom allocation failed",
    )
    assert operation.registration_state == RegistrationState("r", status="failed", last_updated="2024-01-01T00:00:00Z")
    assert json.loads(registration_response_body(operation)) == body


def test_error_response() -> None:
    body = b'{"errorCode":401002,"trackingId":"8f3b","message":"The device is unauthorized.","timestampUtc":"t"}'
    assert parse_registration_response(401, body) == RegistrationOperation(
        operation_id=None,
        status="failed",
        error_code=401002,
        error_message="The device is unauthorized.",
        tracking_id="8f3b",
    )


def test_error_response_body_carries_the_tracking_id() -> None:
    operation = RegistrationOperation(None, "failed", error_code=401002, error_message="no", tracking_id="t-1")
    body = registration_response_body(operation)
    assert json.loads(body) == {"errorCode": 401002, "trackingId": "t-1", "message": "no"}
    assert parse_registration_response(401, body) == operation


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_error_response_without_a_body(body: bytes) -> None:
    assert parse_registration_response(500, body) == RegistrationOperation(None, "failed")


def test_error_response_body_round_trip() -> None:
    operation = RegistrationOperation(None, "failed", error_code=429001, error_message="throttled")
    body = registration_response_body(operation)
    assert json.loads(body) == {"errorCode": 429001, "message": "throttled"}
    assert parse_registration_response(429, body) == operation


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b""),
        (202, b"{}"),
        (202, b'{"operationId":"x"}'),
        (202, b'{"status":"assigning"}'),
        (202, b'{"operationId":1,"status":"assigning"}'),
        (200, b'{"operationId":"x","status":"assigned","registrationState":[]}'),
        (200, b'{"operationId":"x","status":"assigned","registrationState":{}}'),
        (200, b'{"operationId":"x","status":"assigned","registrationState":{"registrationId":"r","deviceId":7}}'),
        (401, b'{"errorCode":"401002"}'),
        (401, b'{"errorCode":true}'),
        (401, b'{"message":5}'),
        (500, b"<html>"),
        (200, b"\xc3("),
        (200, b"{" * 50_000),
    ],
)
def test_malformed_responses(status: int, body: bytes) -> None:
    with pytest.raises(ProtocolError, match=f"malformed DPS {status} response"):
        parse_registration_response(status, body)


def test_response_status_must_be_an_int() -> None:
    with pytest.raises(TypeError, match=r"^status: expected int"):
        parse_registration_response("200", b"{}")  # type: ignore[arg-type]


def test_response_body_rejects_non_operations() -> None:
    with pytest.raises(TypeError, match=r"^operation: expected RegistrationOperation"):
        registration_response_body({"operationId": "x"})  # type: ignore[arg-type]


states = st.builds(
    RegistrationState,
    registration_id=identities,
    assigned_hub=optional_text,
    device_id=optional_text,
    status=optional_text,
    substatus=optional_text,
    payload=json_values,
    created=optional_text,
    last_updated=optional_text,
    etag=optional_text,
)


@given(
    operation_id=st.text(min_size=1),
    status=st.sampled_from(["assigning", "assigned", "failed", "disabled", "unassigned"]),
    state=st.none() | states,
    error_code=st.none() | st.integers(0, 999_999),
    error_message=st.none() | st.text(),
)
def test_response_round_trip(
    operation_id: str, status: str, state: RegistrationState | None, error_code: int | None, error_message: str | None
) -> None:
    operation = RegistrationOperation(operation_id, status, state, error_code, error_message)
    for topic_status in (200, 202):
        assert parse_registration_response(topic_status, registration_response_body(operation)) == operation


@given(body=st.binary() | st.text().map(str.encode), status=st.integers(0, 999))
def test_response_parser_raises_only_protocol_error(body: bytes, status: int) -> None:
    with contextlib.suppress(ProtocolError):
        parse_registration_response(status, body)


@given(body=st.binary() | st.text().map(str.encode) | json_values.map(lambda value: json.dumps(value).encode()))
def test_request_parser_raises_only_protocol_error(body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_registration_request(body)
