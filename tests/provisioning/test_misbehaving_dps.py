"""ProvisioningClient against a DPS that misbehaves: malformed answers, silence, a dropped connection.

The server here is a small MQTT server on the emulator's own TLS listener code and codec, scripted
per test; the client under test talks to it over a real TLS socket.
"""

from __future__ import annotations

import json

import anyio
import pytest

import aioiothub
from aioiothub.protocol.topics import parse_dps_request_topic
from tests.provisioning.provisioning_helpers import STEP, rogue_client, rogue_dps

pytestmark = pytest.mark.anyio

ASSIGNED = {
    "operationId": "op-1",
    "status": "assigned",
    "registrationState": {"registrationId": "rogue-device", "assignedHub": "hub.example", "deviceId": "d1",
                          "status": "assigned"},
}


def rid(topic: str) -> str:
    return parse_dps_request_topic(topic).request_id


@pytest.mark.parametrize(
    "body",
    [b"<html>", b'{"operationId":"op-1","status":"assigned"}', b'{"status":7}'],
    ids=["not-json", "assigned-without-state", "wrong-types"],
)
async def test_a_malformed_answer_is_a_protocol_error(transport: str, body: bytes) -> None:
    def answer(topic: str, _: bytes) -> list[tuple[str, bytes]]:
        return [(f"$dps/registrations/res/200/?$rid={rid(topic)}", body)]

    async with rogue_dps(answer) as server, rogue_client(server, transport) as client:
        with pytest.raises(aioiothub.ProtocolError, match=r"DPS|malformed"):
            await client.register(timeout=STEP)
        assert client._protocol.pending_request_id is None
        assert client.connected


async def test_answers_to_other_requests_and_other_topics_are_ignored(transport: str) -> None:
    def answer(topic: str, _: bytes) -> list[tuple[str, bytes]]:
        return [
            ("$dps/registrations/res/200/?$rid=not-mine", b"garbage"),
            ("$dps/registrations/res/abc/?$rid=1", b"{}"),
            (f"$dps/registrations/res/200/?$rid={rid(topic)}", json.dumps(ASSIGNED).encode()),
        ]

    async with rogue_dps(answer) as server, rogue_client(server, transport) as client:
        result = await client.register(timeout=STEP)
    assert (result.assigned_hub, result.device_id) == ("hub.example", "d1")
    (request,) = server.requests
    assert json.loads(request[1]) == {"registrationId": "rogue-device"}


async def test_silence_times_out_and_leaves_nothing_pending(transport: str) -> None:
    async with rogue_dps(lambda topic, body: []) as server, rogue_client(server, transport) as client:
        with pytest.raises(TimeoutError, match=r"'rogue-device' did not complete within 0.5 s \(no answer yet\)"):
            await client.register(timeout=0.5)
        assert client._protocol.pending_request_id is None


async def test_cancelling_a_request_in_flight_then_registering_again(transport: str) -> None:
    answers: list[list[tuple[str, bytes]]] = [[]]  # the first request goes unanswered

    def answer(topic: str, _: bytes) -> list[tuple[str, bytes]]:
        if answers:
            return answers.pop()
        # A late answer to the abandoned request first: it must not complete the new one.
        late = {**ASSIGNED, "registrationState": {**ASSIGNED["registrationState"], "deviceId": "late"}}
        return [
            ("$dps/registrations/res/200/?$rid=1", json.dumps(late).encode()),
            (f"$dps/registrations/res/200/?$rid={rid(topic)}", json.dumps(ASSIGNED).encode()),
        ]

    async with rogue_dps(answer) as server, rogue_client(server, transport) as client:
        with anyio.move_on_after(0.5):
            await client.register(timeout=STEP)
        assert client._protocol.pending_request_id is None
        result = await client.register(timeout=STEP)
    assert result.device_id == "d1"
    assert [rid(topic) for topic, _ in server.requests] == ["1", "2"]


async def test_a_dropped_connection_fails_the_registration(transport: str) -> None:
    async with rogue_dps(lambda topic, body: None) as server, rogue_client(server, transport) as client:
        with pytest.raises(aioiothub.ConnectionLostError):
            await client.register(timeout=STEP)
        assert client._protocol.pending_request_id is None


async def test_the_register_request_is_what_dps_documents(transport: str) -> None:
    def answer(topic: str, _: bytes) -> list[tuple[str, bytes]]:
        status = 202 if len(server.requests) == 1 else 200
        body = {"operationId": "op-1", "status": "assigning"} if status == 202 else ASSIGNED
        return [(f"$dps/registrations/res/{status}/?$rid={rid(topic)}&retry-after=0", json.dumps(body).encode())]

    async with rogue_dps(answer) as server, rogue_client(server, transport) as client:
        await client.register({"modelId": "dtmi:x;1"}, timeout=STEP)
    (register_topic, register_body), (poll_topic, poll_body) = server.requests
    assert register_topic == "$dps/registrations/PUT/iotdps-register/?$rid=1"
    assert json.loads(register_body) == {"registrationId": "rogue-device", "payload": {"modelId": "dtmi:x;1"}}
    assert poll_topic == "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=op-1"
    assert poll_body == b" "
