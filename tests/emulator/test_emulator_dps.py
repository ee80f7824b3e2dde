"""The emulator's DPS byte for byte: what it accepts, what it answers, what closes a connection.

These tests speak raw MQTT (``RawClient``) so that they can send exactly what a device might,
including what no well-behaved client would.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aioiothub.emulator import Emulator, Hub
from aioiothub.emulator.hub.dps import DEFAULT_ID_SCOPE
from aioiothub.emulator.hub.dps_enrollments import Allocation
from aioiothub.protocol.connect import dps_username
from aioiothub.protocol.mqtt import ConnAck, Publish, encode_publish, encode_subscribe, encode_unsubscribe
from aioiothub.protocol.sas import dps_resource_uri, generate_sas_token
from aioiothub.protocol.topics import DPS_RESPONSE_SUBSCRIPTION, parse_dps_response_topic
from tests.emulator.emulator_helpers import RawClient, raw_client, raw_connection

pytestmark = pytest.mark.anyio

REGISTER = "$dps/registrations/PUT/iotdps-register/?$rid={rid}"


def dps_token(hub: Emulator, registration_id: str, key: str, *, skn: str | None = None) -> str:
    return generate_sas_token(dps_resource_uri(hub.dps.id_scope, registration_id), key, int(time.time()) + 3600, skn)


@asynccontextmanager
async def dps_client(
    hub: Emulator, registration_id: str, key: str, *, subscribe: bool = True
) -> AsyncIterator[RawClient]:
    async with raw_connection(hub) as client:
        ack = await client.connect(
            registration_id, dps_username(hub.dps.id_scope, registration_id), dps_token(hub, registration_id, key)
        )
        assert ack.return_code == 0, ack
        if subscribe:
            assert (await client.subscribe(1, [(DPS_RESPONSE_SUBSCRIPTION, 1)])).granted == (1,)
        yield client


async def request(client: RawClient, topic: str, body: bytes, packet_id: int = 7) -> tuple[Any, dict[str, Any]]:
    """Send a QoS 1 request; return the answer's parsed topic and JSON body (the PUBACK checked on the way)."""
    await client.send(encode_publish(topic, body, 1, packet_id))
    answer: Publish | None = None
    acknowledged = False
    while answer is None or not acknowledged:
        packet = await client.receive()
        if isinstance(packet, Publish):
            answer = packet
        else:
            assert getattr(packet, "packet_id", None) == packet_id, packet
            acknowledged = True
    return parse_dps_response_topic(answer.topic), json.loads(answer.payload)


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator(websocket_port=None) as emulator:
        emulator.dps.retry_after = 3
        yield emulator


async def test_register_then_poll_is_answered_as_dps_does(hub: Emulator) -> None:
    key = hub.dps.add_enrollment("dev1", initial_twin={"properties": {"desired": {"interval": 9}}}).primary_key
    assert key is not None
    async with dps_client(hub, "dev1", key) as client:
        await client.send(encode_publish(REGISTER.format(rid="r1"), b'{"registrationId":"dev1","payload":null}', 0))
        answer = await client.next_publish()
        assert answer.topic == "$dps/registrations/res/202/?$rid=r1&retry-after=3"
        body = json.loads(answer.payload)
        assert body["status"] == "assigning"
        operation_id = body["operationId"]
        assert operation_id.startswith("4.")
        topic, final = await request(
            client, f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=r2&operationId={operation_id}", b" "
        )
    assert (topic.status, topic.request_id, topic.retry_after) == (200, "r2", None)
    assert final["status"] == "assigned"
    state = final["registrationState"]
    assert (state["registrationId"], state["deviceId"], state["assignedHub"]) == ("dev1", "dev1", "localhost")
    assert state["substatus"] == "initialAssignment"
    assert {"createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"} <= state.keys()
    assert hub.twin("dev1")["desired"] == {"interval": 9, "$version": 2}


async def test_a_group_token_with_skn_registration_is_accepted(hub: Emulator) -> None:
    group = hub.dps.add_enrollment_group("factory")
    async with raw_connection(hub) as client:
        token = dps_token(hub, "node-style", group.derive_device_key("node-style"), skn="registration")
        user = dps_username(hub.dps.id_scope, "node-style", client_version="x")
        ack = await client.connect("node-style", user, token)
    assert ack.return_code == 0


@pytest.mark.parametrize(
    ("client_id", "user", "code"),
    [
        ("other", None, 2),
        ("dev1", "0ne00000000/registrations/dev 1/api-version=2019-03-31", 5),
        ("dev1", "0neWRONG/registrations/dev1/api-version=2019-03-31", 5),
    ],
    ids=["client-id-not-registration-id", "malformed-username", "wrong-scope"],
)
async def test_connects_that_are_refused(hub: Emulator, client_id: str, user: str | None, code: int) -> None:
    key = hub.dps.add_enrollment("dev1").primary_key
    assert key is not None
    async with raw_connection(hub) as client:
        token = dps_token(hub, "dev1", key)
        ack = await client.connect(client_id, user or dps_username(hub.dps.id_scope, "dev1"), token)
        assert ack.return_code == code
        await client.expect_closed()


async def test_a_certificate_for_a_symmetric_key_enrollment_is_refused(hub: Emulator, tmp_path: Any) -> None:
    hub.dps.add_enrollment("dev1")
    group = hub.dps.add_enrollment_group("cas", attestation="x509")
    cert_pem, key_pem = group.issue_device_certificate("dev1")
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    context = hub.client_ssl_context()
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    async with raw_connection(hub, tls_context=context) as client:
        # The individual enrollment takes precedence over the group whose CA issued the certificate.
        ack = await client.connect("dev1", dps_username(hub.dps.id_scope, "dev1"), None)
    assert ack.return_code == 5


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "malformed"), (b'{"registrationId":"someone-else"}', "someone-else")],
    ids=["malformed-body", "another-registration-id"],
)
async def test_a_bad_register_body_is_answered_400_and_the_connection_stays(
    hub: Emulator, body: bytes, message: str
) -> None:
    key = hub.dps.add_enrollment("dev1").primary_key
    assert key is not None
    async with dps_client(hub, "dev1", key) as client:
        topic, answer = await request(client, REGISTER.format(rid="1"), body)
        assert topic.status == 400
        assert answer["errorCode"] == 400004
        assert message in answer["message"]
        assert answer["trackingId"]
        topic, _ = await request(client, REGISTER.format(rid="2"), b'{"registrationId":"dev1"}', packet_id=8)
        assert topic.status == 202
    assert hub.dps.registrations()[0].registration_id == "dev1"


async def test_polling_an_unknown_operation_is_404(hub: Emulator) -> None:
    key = hub.dps.add_enrollment("dev1").primary_key
    assert key is not None
    async with dps_client(hub, "dev1", key) as client:
        topic, answer = await request(
            client, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=nope", b" "
        )
    assert (topic.status, answer["errorCode"]) == (404, 404201)


async def test_injected_failures_carry_retry_after(hub: Emulator) -> None:
    key = hub.dps.add_enrollment("dev1").primary_key
    assert key is not None
    hub.dps.fail_requests(1, 429, retry_after=5)
    async with dps_client(hub, "dev1", key) as client:
        topic, answer = await request(client, REGISTER.format(rid="1"), b'{"registrationId":"dev1"}')
        assert (topic.status, topic.retry_after, answer["errorCode"]) == (429, 5, 429001)
        topic, _ = await request(client, REGISTER.format(rid="2"), b'{"registrationId":"dev1"}', packet_id=8)
        assert topic.status == 202


async def test_a_request_before_subscribing_is_acknowledged_and_unanswered(hub: Emulator) -> None:
    key = hub.dps.add_enrollment("dev1").primary_key
    assert key is not None
    async with dps_client(hub, "dev1", key, subscribe=False) as client:
        await client.send(encode_publish(REGISTER.format(rid="1"), b'{"registrationId":"dev1"}', 1, 3))
        puback = await client.receive()
        assert getattr(puback, "packet_id", None) == 3
        assert (await client.subscribe(4, [(DPS_RESPONSE_SUBSCRIPTION, 0)])).granted == (0,)
        await client.send(encode_unsubscribe(5, [DPS_RESPONSE_SUBSCRIPTION]))
        assert getattr(await client.receive(), "packet_id", None) == 5
    assert hub.dps.registrations() == []


@pytest.mark.parametrize(
    "packet",
    [
        encode_subscribe(2, [("$iothub/twin/res/#", 0)]),
        encode_publish("devices/dev1/messages/events/", b"x", 0),
        encode_publish(REGISTER.format(rid="1"), b"{}", 2, 9),
        encode_publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1", b" ", 0),
    ],
    ids=["hub-subscription", "telemetry", "qos-2", "poll-without-operation-id"],
)
async def test_what_a_dps_client_may_not_do_closes_only_its_connection(hub: Emulator, packet: bytes) -> None:
    key = hub.dps.add_enrollment("dev1").primary_key
    device = hub.add_device("bystander")
    assert key is not None
    async with raw_client(hub, device) as bystander:
        async with dps_client(hub, "dev1", key) as client:
            await client.send(packet)
            await client.expect_closed()
        assert hub.is_connected("bystander")
        assert (await bystander.subscribe(1, [("$iothub/twin/res/#", 0)])).granted == (0,)


async def test_a_disabled_enrollment_leaves_the_hub_unchanged(hub: Emulator) -> None:
    key = hub.dps.add_enrollment("dev1", enabled=False).primary_key
    assert key is not None
    hub.dps.retry_after = 0
    async with dps_client(hub, "dev1", key) as client:
        _, accepted = await request(client, REGISTER.format(rid="1"), b'{"registrationId":"dev1"}')
        topic, final = await request(
            client,
            f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={accepted['operationId']}",
            b" ",
            packet_id=8,
        )
    assert (topic.status, final["status"]) == (200, "disabled")
    assert final["registrationState"]["errorCode"] == 401002
    assert final["trackingId"]
    assert [identity.device_id for identity in hub.identities()] == []


async def test_pending_polls_answer_assigning_first(hub: Emulator) -> None:
    key = hub.dps.add_enrollment("dev1").primary_key
    assert key is not None
    hub.dps.pending_polls = 2
    async with dps_client(hub, "dev1", key) as client:
        _, accepted = await request(client, REGISTER.format(rid="1"), b'{"registrationId":"dev1"}')
        poll = f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid={{}}&operationId={accepted['operationId']}"
        statuses = [(await request(client, poll.format(n), b" ", packet_id=n))[0].status for n in (2, 3, 4)]
    assert statuses == [202, 202, 200]
    assert hub.dps.registrations()[0].polls == 3


# ------------------------------------------------------------------------- the service API, offline


def test_service_api_checks_its_arguments() -> None:
    hub = Hub()
    dps = hub.dps
    assert dps.id_scope == DEFAULT_ID_SCOPE
    dps.add_enrollment("dev1")
    with pytest.raises(ValueError, match="already enrolled"):
        dps.add_enrollment("dev1")
    with pytest.raises(ValueError, match="attestation"):
        dps.add_enrollment("dev2", attestation="tpm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="certificate_pem is only"):
        dps.add_enrollment("dev3", certificate_pem=b"x")
    with pytest.raises(ValueError, match="primary_key"):
        dps.add_enrollment("dev4", primary_key="not base64!")
    with pytest.raises(ValueError, match=r"depth|nested|deep"):
        dps.add_enrollment("dev5", initial_twin={"properties": {"desired": _nested(12)}})
    with pytest.raises(ValueError, match="unknown part"):
        dps.add_enrollment("dev6", initial_twin={"desired": {}})
    with pytest.raises(TypeError, match="allocation"):
        dps.add_enrollment("dev7", allocation="not callable")  # type: ignore[arg-type]
    dps.add_enrollment_group("g")
    with pytest.raises(ValueError, match="already exists"):
        dps.add_enrollment_group("g")
    with pytest.raises(ValueError, match=r"X\.509|symmetric"):
        dps.add_enrollment_group("x", attestation="x509").derive_device_key("d")
    with pytest.raises(ValueError, match="no CA key"):
        dps.add_enrollment_group("y", attestation="x509", ca_certificate_pem=hub.certificate_authority.certificate_pem
                                 ).issue_device_certificate("d")
    with pytest.raises(ValueError, match="id_scope"):
        dps.id_scope = "0ne/x"
    with pytest.raises(ValueError, match="retry_after"):
        dps.retry_after = -1
    with pytest.raises(ValueError, match="status"):
        dps.fail_requests(1, 200)
    with pytest.raises(ValueError, match="not enrolled"):
        dps.enrollment("nobody")
    with pytest.raises(ValueError, match="no enrollment group"):
        dps.enrollment_group("nothing")
    assert dps.enrollment("dev1").registration_id == "dev1"
    assert "primary" not in repr(dps.enrollment("dev1"))


def test_claims_only_dps_usernames() -> None:
    dps = Hub(hostname="myhub").dps
    assert dps.claims("0ne00000000/registrations/dev1/api-version=2019-03-31")
    assert not dps.claims("myhub/registrations/?api-version=2021-04-12")
    assert not dps.claims("myhub/registrations/mod/?api-version=2021-04-12")
    assert not dps.claims("myhub/dev1/?api-version=2021-04-12")
    assert not dps.claims(None)


async def test_an_allocation_hook_returning_nonsense_fails_the_registration_only(hub: Emulator) -> None:
    def allocate(registration_id: str, payload: Any) -> Allocation:
        return "dev9"  # type: ignore[return-value]

    key = hub.dps.add_enrollment("dev1", allocation=allocate).primary_key
    assert key is not None
    hub.dps.retry_after = 0
    async with dps_client(hub, "dev1", key) as client:
        _, accepted = await request(client, REGISTER.format(rid="1"), b'{"registrationId":"dev1"}')
        poll = f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={accepted['operationId']}"
        topic, final = await request(client, poll, b" ", packet_id=8)
    assert (topic.status, final["status"]) == (200, "failed")
    assert final["registrationState"]["errorCode"] == 400209
    assert "not an Allocation" in final["registrationState"]["errorMessage"]
    assert hub.identities() == []


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


async def test_connack_is_refused_for_a_hub_username_of_an_unknown_device(hub: Emulator) -> None:
    # Not claimed by DPS: the hub's own admission answers (and DPS keeps no record).
    async with raw_connection(hub) as client:
        packet = await client.connect("dev1", "localhost/dev1/?api-version=2021-04-12", "SharedAccessSignature sr=x")
    assert isinstance(packet, ConnAck)
    assert packet.return_code == 5
    assert hub.dps.registrations() == []
