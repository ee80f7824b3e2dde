"""The emulator's AMQP endpoint on its own terms: what a link may attach to, with which token, and
what ill-formed or hostile input does -- over real sockets, with an AMQP client on proton's engine."""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.hub.telemetry import TelemetryRecord
from tests.emulator.amqp_client import AmqpTestClient, service_bus_token

pytestmark = pytest.mark.anyio


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator(amqp_port=0, amqp_plain_port=0, websocket_port=None) as emulator:
        yield emulator


def _audience(hub: Emulator) -> str:
    return f"sb://{hub.hostname}/{hub.amqp.event_hub_name}"


def _partition(hub: Emulator, partition: str = "0", group: str = "$Default") -> str:
    return f"amqps://{hub.hostname}/{hub.amqp.event_hub_name}/ConsumerGroups/{group}/Partitions/{partition}"


def _policy_key(hub: Emulator, name: str) -> str:
    return next(policy.primary_key for policy in hub.policies if policy.name == name)


async def _authorized_client(hub: Emulator, policy: str = "service") -> AmqpTestClient:
    assert hub.amqp.plain_port is not None
    client = await AmqpTestClient.connect(hub.amqp.plain_port)
    token = service_bus_token(_audience(hub), policy, _policy_key(hub, policy))
    status, description = await client.put_token(_audience(hub), token)
    assert (status, description) == (200, "OK")
    return client


async def test_put_token_refuses_a_wrong_key_a_foreign_audience_and_an_expired_token(hub: Emulator) -> None:
    assert hub.amqp.plain_port is not None
    client = await AmqpTestClient.connect(hub.amqp.plain_port)
    key = _policy_key(hub, "service")
    wrong = await client.put_token(_audience(hub), service_bus_token(_audience(hub), "service", key[::-1]))
    assert wrong[0] == 401
    assert "signature does not match" in wrong[1]
    foreign = "sb://elsewhere.example/hub"
    assert (await client.put_token(foreign, service_bus_token(foreign, "service", key)))[0] == 401
    expired = service_bus_token(_audience(hub), "service", key, expiry=int(time.time()) - 10)
    assert (await client.put_token(_audience(hub), expired))[0] == 401
    assert (await client.put_token(_audience(hub), service_bus_token(_audience(hub), "nobody", key)))[0] == 401
    await client.aclose()


async def test_a_reader_needs_a_token_granting_service_connect(hub: Emulator) -> None:
    assert hub.amqp.plain_port is not None
    client = await AmqpTestClient.connect(hub.amqp.plain_port)
    untokened = await client.attach_receiver(_partition(hub))
    await client.until(lambda: untokened.remote_condition is not None)
    assert untokened.remote_condition is not None
    assert untokened.remote_condition.name == "amqp:unauthorized-access"
    # registryRead lacks ServiceConnect: its valid token covers the address but not the right.
    status, _ = await client.put_token(
        _audience(hub), service_bus_token(_audience(hub), "registryRead", _policy_key(hub, "registryRead"))
    )
    assert status == 200
    still_refused = await client.attach_receiver(_partition(hub))
    await client.until(lambda: still_refused.remote_condition is not None)
    assert still_refused.remote_condition is not None
    assert still_refused.remote_condition.name == "amqp:unauthorized-access"
    await client.aclose()


async def test_unknown_addresses_partitions_and_consumer_groups_are_not_found(hub: Emulator) -> None:
    client = await _authorized_client(hub)
    for address in ("/no/such/node", _partition(hub, "4"), _partition(hub, group="nobody")):
        link = await client.attach_receiver(address)
        await client.until(lambda link=link: link.remote_condition is not None)
        assert link.remote_condition is not None
        assert link.remote_condition.name == "amqp:not-found", address
    bad_selector = await client.attach_receiver(_partition(hub), selector="amqp.annotation.x-opt-offset ~ 'x'")
    await client.until(lambda: bad_selector.remote_condition is not None)
    assert bad_selector.remote_condition is not None
    assert bad_selector.remote_condition.name == "amqp:invalid-field"
    await client.aclose()


async def test_a_higher_owner_level_takes_the_partition_over(hub: Emulator) -> None:
    first = await _authorized_client(hub)
    second = await _authorized_client(hub)
    low = await first.attach_receiver(_partition(hub), epoch=1)
    high = await second.attach_receiver(_partition(hub), epoch=2)
    await first.until(lambda: low.remote_condition is not None)
    assert low.remote_condition is not None
    assert low.remote_condition.name == "amqp:link:stolen"
    assert high.remote_condition is None
    await first.aclose()
    await second.aclose()


async def test_malformed_bytes_close_only_that_connection(hub: Emulator) -> None:
    assert hub.amqp.plain_port is not None
    reader = await _authorized_client(hub)
    link = await reader.attach_receiver(_partition(hub, hub.core.events.partition_for("dev1").identifier),
                                        selector="amqp.annotation.x-opt-offset > '-1'")
    for garbage in (b"HTTP/1.1 200 OK\r\n\r\n", b"AMQP\x00\x01\x00\x00" + b"\xff" * 64, b"AMQP\x03\x01\x00\x00\x00"):
        stream = await anyio.connect_tcp("127.0.0.1", hub.amqp.plain_port)
        await stream.send(garbage)
        with anyio.fail_after(15):
            try:
                while await stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        await stream.aclose()
    device = hub.add_device("dev1")
    async with aioiothub.IoTHubDeviceClient.from_connection_string(
        device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context(), transport="native"
    ) as client:
        await client.send_message("still served")
    await reader.until(lambda: len(reader.messages_on(link)) == 1)
    assert reader.messages_on(link)[0].body == b"still served"
    await reader.aclose()


async def test_a_reader_without_credit_never_holds_devices_back(transport: str, hub: Emulator) -> None:
    device = hub.add_device("dev1")
    reader = await _authorized_client(hub)
    partition = hub.core.events.partition_for("dev1").identifier
    link = await reader.attach_receiver(_partition(hub, partition), selector="amqp.annotation.x-opt-offset > '-1'",
                                        credit=2)
    async with aioiothub.IoTHubDeviceClient.from_connection_string(
        device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
    ) as client:
        with anyio.fail_after(30):
            for index in range(200):
                await client.send_message(f"m{index}")
    await reader.until(lambda: len(reader.messages_on(link)) == 2)
    assert [message.body for message in reader.messages_on(link)] == [b"m0", b"m1"]
    link.flow(300)
    await reader.until(lambda: len(reader.messages_on(link)) == 200)
    bodies = [message.body for message in reader.messages_on(link)]
    assert bodies == [f"m{index}".encode() for index in range(200)]
    annotations = reader.messages_on(link)[5].annotations or {}
    assert annotations["x-opt-sequence-number"] == 5
    await reader.aclose()


async def test_events_appended_while_a_write_waits_on_the_reader_are_sent_too(hub: Emulator) -> None:
    # The reader reads nothing at first: the emulator's write of the first events fills the socket
    # and waits. The events appended meanwhile must still go out once the reader catches up, with
    # no new credit from the reader to wake the emulator.
    log = hub.core.events
    device = next(f"d{index}" for index in range(100) if log.partition_for(f"d{index}").identifier == "0")
    reader = await _authorized_client(hub)
    link = await reader.attach_receiver(_partition(hub), selector="amqp.annotation.x-opt-offset > '-1'", credit=5000)
    now = datetime.datetime.now(datetime.UTC)
    for index in range(2003):
        body = b"x" * 10_000 if index < 2000 else f"late {index}".encode()
        log.append(TelemetryRecord(device, None, body, {}, {}, now))
        if index in (1999, 2002):
            log.appended()
            await anyio.sleep(0.5)  # the write of the first 2,000 (20 MB) waits for the reader
    await reader.until(lambda: len(reader.messages_on(link)) == 2003, seconds=30)
    assert reader.messages_on(link)[-1].body == b"late 2002"
    await reader.aclose()
