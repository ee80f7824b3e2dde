"""The service side over AMQP: cloud-to-device sends, delivery feedback, file notifications and the
``messages/events`` redirect -- over real sockets, with an AMQP client on proton's engine and
aioiothub devices on every transport."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from proton import Delivery, Link, Message, symbol

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.sas import generate_sas_token
from tests.emulator.amqp_client import AmqpTestClient, remote_error

pytestmark = pytest.mark.anyio

DEVICEBOUND = "/messages/devicebound"
FEEDBACK = "/messages/serviceBound/feedback"
FILE_NOTIFICATIONS = "/messages/serviceBound/filenotifications"


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator(amqp_port=0, amqp_plain_port=0, websocket_port=None) as emulator:
        yield emulator


def _key(hub: Emulator, policy: str) -> str:
    return next(item.primary_key for item in hub.policies if item.name == policy)


async def _service_client(hub: Emulator, policy: str = "service") -> AmqpTestClient:
    """A client that authenticated as azure-iot-hub does: a hub token (``sr`` = host) for ``https://host``."""
    assert hub.amqp.plain_port is not None
    client = await AmqpTestClient.connect(hub.amqp.plain_port)
    token = generate_sas_token(hub.hostname, _key(hub, policy), int(time.time()) + 3600, policy)
    assert await client.put_token(f"https://{hub.hostname}", token) == (200, "OK")
    return client


def _c2d(device_id: str, body: bytes, **fields: Any) -> Message:
    message = Message(body=body, address=f"/devices/{device_id}/messages/devicebound", inferred=True)
    message.id = fields.pop("id", str(uuid.uuid4()))
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def _device_client(hub: Emulator, connection_string: str) -> aioiothub.IoTHubDeviceClient:
    return aioiothub.IoTHubDeviceClient.from_connection_string(
        connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
    )


async def test_a_c2d_message_sent_over_amqp_reaches_the_device_with_its_properties(
    transport: str, hub: Emulator
) -> None:
    device = hub.add_device("dev1")
    service = await _service_client(hub)
    sender = await service.attach_sender(DEVICEBOUND)
    assert sender.state & Link.REMOTE_ACTIVE
    async with _device_client(hub, device.connection_string) as client:
        messages = aiter(client.cloud_messages())
        message = _c2d(
            "dev1",
            b"on",
            id="m-1",
            correlation_id="c-7",
            content_type=symbol("text/plain"),
            content_encoding=symbol("utf-8"),
            properties={"iothub-ack": "full", "room": "kitchen"},
        )
        delivery = await service.send(sender, message)
        assert delivery.remote_state == Delivery.ACCEPTED
        with anyio.fail_after(10):
            received = await anext(messages)
    assert received.body == b"on"
    assert (received.message_id, received.correlation_id) == ("m-1", "c-7")
    assert (received.content_type, received.content_encoding) == ("text/plain", "utf-8")
    assert received.properties == {"room": "kitchen"}
    assert received.ack == "full"
    (record,) = await hub.wait_for_feedback(1, "dev1")
    assert (record.original_message_id, record.status) == ("m-1", "Success")
    await service.aclose()


async def test_refused_sends_carry_the_conditions_the_sdks_translate(hub: Emulator) -> None:
    hub.add_device("dev1")
    service = await _service_client(hub)
    sender = await service.attach_sender(DEVICEBOUND)

    async def outcome(message: Message) -> tuple[int, str | None]:
        delivery = await service.send(sender, message)
        condition = delivery.remote.condition
        return delivery.remote_state, condition.name if condition is not None else None

    assert await outcome(_c2d("nobody", b"x")) == (Delivery.REJECTED, "amqp:not-found")
    assert await outcome(_c2d("dev1", b"x" * 65537)) == (Delivery.REJECTED, "amqp:link:message-size-exceeded")
    wrong_to = _c2d("dev1", b"x")
    wrong_to.address = "/devices/dev1/messages/events"
    assert await outcome(wrong_to) == (Delivery.REJECTED, "amqp:invalid-field")
    bad_ack = _c2d("dev1", b"x", properties={"iothub-ack": "sometimes"})
    assert await outcome(bad_ack) == (Delivery.REJECTED, "amqp:invalid-field")
    for index in range(50):
        assert (await outcome(_c2d("dev1", b"%d" % index)))[0] == Delivery.ACCEPTED
    assert await outcome(_c2d("dev1", b"one too many")) == (Delivery.REJECTED, "amqp:resource-limit-exceeded")
    assert hub.c2d_queue_length("dev1") == 50
    # The link and the connection outlive every refusal.
    assert sender.state & Link.REMOTE_ACTIVE
    await service.aclose()


async def test_service_nodes_need_a_token_granting_service_connect(hub: Emulator) -> None:
    assert hub.amqp.plain_port is not None
    anonymous = await AmqpTestClient.connect(hub.amqp.plain_port)
    sender = await anonymous.attach_sender(DEVICEBOUND)
    feedback = await anonymous.attach_receiver(FEEDBACK)
    for link in (sender, feedback):
        condition = remote_error(link)
        assert condition is not None
        assert condition.name == "amqp:unauthorized-access"
    await anonymous.aclose()
    registry_only = await _service_client(hub, "registryRead")
    refused = await registry_only.attach_sender(DEVICEBOUND)
    condition = remote_error(refused)
    assert condition is not None
    assert condition.name == "amqp:unauthorized-access"
    await registry_only.aclose()


async def test_feedback_is_batched_json_and_a_released_batch_goes_to_the_next_receiver(
    transport: str, hub: Emulator
) -> None:
    device = hub.add_device("dev1")
    service = await _service_client(hub)
    sender = await service.attach_sender(DEVICEBOUND)
    ids = [f"fb-{index}" for index in range(3)]
    for message_id in ids:
        await service.send(sender, _c2d("dev1", b"x", id=message_id, properties={"iothub-ack": "positive"}))
    async with _device_client(hub, device.connection_string) as client:
        iterator = aiter(client.cloud_messages())
        with anyio.fail_after(10):
            for _ in ids:
                await anext(iterator)
    await hub.wait_for_feedback(3, "dev1")

    first = await _service_client(hub)
    first.auto_accept = False
    link = await first.attach_receiver(FEEDBACK, credit=1)
    await first.until(lambda: len(first.messages_on(link)) == 1)
    batch = first.messages_on(link)[0]
    assert batch.content_type == "application/vnd.microsoft.iothub.feedback.json"
    records = json.loads(bytes(batch.body))
    assert [record["originalMessageId"] for record in records] == ids
    assert {record["statusCode"] for record in records} == {"Success"}
    assert {record["deviceId"] for record in records} == {"dev1"}
    assert {record["deviceGenerationId"] for record in records} == {device.generation_id}
    assert all(record["enqueuedTimeUtc"].endswith("Z") for record in records)
    (_, delivery), = first.deliveries
    delivery.update(Delivery.RELEASED)
    delivery.settle()
    await first.until(lambda: True)

    second = await _service_client(hub)
    second_link = await second.attach_receiver(FEEDBACK)
    await second.until(lambda: len(second.messages_on(second_link)) == 1)
    again = json.loads(bytes(second.messages_on(second_link)[0].body))
    assert [record["originalMessageId"] for record in again] == ids
    await second.until(lambda: True)
    assert len(hub.core.queues.feedback_outbox) == 0
    for client in (service, first, second):
        await client.aclose()


async def test_feedback_held_by_a_connection_that_ends_unsettled_is_delivered_again(hub: Emulator) -> None:
    hub.add_device("dev1")
    service = await _service_client(hub)
    sender = await service.attach_sender(DEVICEBOUND)
    await service.send(sender, _c2d("dev1", b"x", id="gone", properties={"iothub-ack": "negative"}))
    hub.core.queues.purge(("dev1", None))
    holder = await _service_client(hub)
    holder.auto_accept = False
    link = await holder.attach_receiver(FEEDBACK)
    await holder.until(lambda: len(holder.messages_on(link)) == 1)
    await holder.aclose()
    reader = await _service_client(hub)
    again = await reader.attach_receiver(FEEDBACK)
    await reader.until(lambda: len(reader.messages_on(again)) == 1)
    (record,) = json.loads(bytes(reader.messages_on(again)[0].body))
    assert (record["originalMessageId"], record["statusCode"], record["description"]) == (
        "gone",
        "Purged",
        "Message purged",
    )
    await reader.aclose()
    await service.aclose()


async def test_an_expiry_in_the_past_expires_the_message_with_feedback(hub: Emulator) -> None:
    hub.add_device("dev1")
    service = await _service_client(hub)
    sender = await service.attach_sender(DEVICEBOUND)
    stale = _c2d("dev1", b"late", id="stale", properties={"iothub-ack": "full"})
    stale.expiry_time = time.time() - 5
    assert (await service.send(sender, stale)).remote_state == Delivery.ACCEPTED
    await anyio.sleep(0.01)
    assert hub.c2d_queue_length("dev1") == 0
    (record,) = hub.feedback("dev1")
    assert (record.original_message_id, record.status) == ("stale", "Expired")
    await service.aclose()


async def test_a_file_upload_is_announced_on_the_file_notification_node(transport: str) -> None:
    async with Emulator(amqp_port=0, amqp_plain_port=0, websocket_port=0) as hub:
        await _announced_upload(hub)


async def _announced_upload(hub: Emulator) -> None:
    device = hub.add_device("dev1")
    service = await _service_client(hub)
    link = await service.attach_receiver(FILE_NOTIFICATIONS)
    assert link.state & Link.REMOTE_ACTIVE
    # File upload is HTTPS, on the emulator's WebSocket/HTTPS port.
    async with aioiothub.IoTHubDeviceClient.from_connection_string(
        device.connection_string, port=hub.websocket_port, websockets=True, ssl_context=hub.client_ssl_context()
    ) as client:
        await client.upload_file("reports/day.txt", b"twelve bytes")
    await service.until(lambda: len(service.messages_on(link)) == 1)
    (message,) = service.messages_on(link)
    notification = json.loads(bytes(message.body))
    assert notification["deviceId"] == "dev1"
    assert notification["blobName"] == "dev1/reports/day.txt"
    assert notification["blobSizeInBytes"] == 12
    assert notification["blobUri"].endswith("/dev1/reports/day.txt")
    assert {"lastUpdatedTime", "enqueuedTimeUtc"} <= notification.keys()
    await service.until(lambda: True)
    assert len(hub.core.file_notifications) == 0
    await service.aclose()


async def test_the_iot_hub_events_address_redirects_to_the_event_hubs_compatible_one(hub: Emulator) -> None:
    service = await _service_client(hub)
    link = await service.attach_receiver(f"amqps://{hub.hostname}/messages/events/ConsumerGroups/$Default/Partitions/0")
    condition = remote_error(link)
    assert condition is not None
    assert condition.name == "amqp:link:redirect"
    info: dict[Any, Any] = condition.info or {}
    assert info[symbol("hostname")] == hub.hostname
    assert info[symbol("port")] == hub.amqp.tls_port
    address = str(info[symbol("address")])
    assert address == (
        f"amqps://{hub.hostname}:{hub.amqp.tls_port}/{hub.amqp.event_hub_name}/ConsumerGroups/$Default/Partitions/0"
    )
    await service.aclose()
