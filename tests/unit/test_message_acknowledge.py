"""Acknowledging a received message: once, on its own connection, never part of its value."""

from __future__ import annotations

import ssl

import pytest

from aioiothub import Message
from aioiothub._session.inbound import Delivery
from aioiothub.transports.base import ConnectParameters, InboundPublish
from tests.fakes import FakeConnection, FakeNetwork

pytestmark = pytest.mark.anyio

PARAMETERS = ConnectParameters(
    host="hub.example.net",
    port=8883,
    client_id="dev1",
    username="hub.example.net/dev1/?api-version=2021-04-12",
    password=None,
    ssl_context=ssl.create_default_context(),
    keepalive=60,
    clean_session=False,
    websockets=False,
    max_in_flight=8,
    connect_timeout=5,
)


async def _connected(network: FakeNetwork) -> FakeConnection:
    connection = network.factory(PARAMETERS, lambda inbound: None)
    await connection.__aenter__()
    return connection


def _received(connection: FakeConnection, packet_id: int) -> Message:
    delivery = Delivery(InboundPublish("devices/dev1/messages/devicebound/", b"hi", 1, packet_id), connection)
    delivery.message = Message.from_wire(b"hi", {"$.mid": "m1", "iothub-ack": "full"}, acknowledger=delivery)
    return delivery.message


async def test_a_received_message_is_acknowledged_once_on_its_connection() -> None:
    connection = await _connected(FakeNetwork())
    message = _received(connection, 7)
    assert await message.acknowledge() is True
    assert await message.acknowledge() is True  # packet ids are reused: never a second PUBACK
    assert connection.acknowledged == [7]


async def test_acknowledging_after_the_connection_is_gone_says_the_hub_will_redeliver() -> None:
    connection = await _connected(FakeNetwork())
    message = _received(connection, 3)
    connection.drop()
    assert await message.acknowledge() is False
    assert connection.acknowledged == []


async def test_only_received_messages_can_be_acknowledged() -> None:
    with pytest.raises(RuntimeError, match="only a message received from the hub"):
        await Message(b"local").acknowledge()
    connection = await _connected(FakeNetwork())
    received = _received(connection, 1)
    with pytest.raises(RuntimeError, match="only a message received from the hub"):
        await received.replace(body=b"copy").acknowledge()


async def test_the_acknowledger_is_not_part_of_the_message_s_value() -> None:
    connection = await _connected(FakeNetwork())
    first, second = _received(connection, 1), _received(connection, 2)
    assert first == second
    assert first == Message.from_wire(b"hi", {"$.mid": "m1", "iothub-ack": "full"})
    assert repr(first) == "Message(body=<2 bytes>, message_id='m1', ack='full')"
    assert first.ack == "full"  # the sender's feedback request, unchanged by the new method
    with pytest.raises(AttributeError):
        first._acknowledger = None  # type: ignore[misc]
