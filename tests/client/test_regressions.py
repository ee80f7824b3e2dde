"""Defects found by trying the client as an adversarial user would; each test failed before its fix."""

from __future__ import annotations

import logging
import ssl
import time
import warnings

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.sas import device_resource_uri
from tests.client.client_helpers import (
    STEP,
    device_client,
    new_id,
    nothing_more,
    reconnect_seen_by_hub,
    round_trips,
    take,
    wait_subscribed,
)

pytestmark = pytest.mark.anyio


async def test_connection_states_yield_false_on_every_unplanned_drop(hub: Emulator) -> None:
    device = hub.add_device(new_id("states"))
    seen: list[bool] = []
    async with device_client(hub, device) as client:
        states = client.connection_states()
        seen.extend(await take(states, 1))  # the state now
        for _ in range(2):
            hub.drop_connection(device.device_id)
            seen.extend(await take(states, 2))
    assert seen == [True, False, True, False, True]


async def test_connection_states_start_with_the_state_now(hub: Emulator) -> None:
    device = hub.add_device(new_id("states"))
    async with device_client(hub, device) as client:
        states = client.connection_states()
        assert await take(states, 1) == [True]  # before the fix: nothing until the next change
        await nothing_more(states)


async def test_a_renewable_sas_token_is_renewed_before_it_expires_and_the_reconnect_is_not_a_drop(
    hub: Emulator,
) -> None:
    device = hub.add_device(new_id("renew"))
    assert device.primary_key is not None
    resource = device_resource_uri(hub.hostname, device.device_id)
    renewed: list[float] = []

    def token(lifetime: int) -> str:
        return aioiothub.generate_sas_token(resource, device.primary_key or "", int(time.time()) + lifetime)

    def renew() -> str:
        renewed.append(time.time())
        return token(3600)

    first_expiry = int(time.time()) + 4
    client = aioiothub.IoTHubDeviceClient(
        hostname=hub.hostname,
        device_id=device.device_id,
        sas_token=aioiothub.generate_sas_token(resource, device.primary_key, first_expiry),
        renew_sas_token=renew,
        port=hub.port,
        ssl_context=hub.client_ssl_context(),
    )
    async with client:
        # Renewal is due a fifth of the lifetime before expiry: about 0.8 s before it. One planned
        # reconnect, and no drop forced by the hub.
        states = client.connection_states()
        assert await take(states, 1) == [True]
        await reconnect_seen_by_hub(hub, device.device_id, timeout=first_expiry - time.time() + STEP)
        assert len(renewed) == 1
        assert renewed[0] < first_expiry, "the token was renewed only after it had expired"
        await client.send_message(b"after renewal")
        await nothing_more(states)  # the planned reconnect is not reported as a drop
    assert len(renewed) == 1


async def test_a_cloud_message_redelivered_on_reconnect_is_acknowledged_on_the_new_connection(
    hub: Emulator,
) -> None:
    device = hub.add_device(new_id("redeliver"))
    async with device_client(hub, device) as client:
        messages = client.cloud_messages()
        taker = anyio.create_task_group()
        async with taker:
            received: list[aioiothub.Message] = []

            async def consume() -> None:
                received.extend(await take(messages, 1, timeout=3 * STEP))

            taker.start_soon(consume)
            await wait_subscribed(hub, f"devices/{device.device_id}/messages/devicebound/#", device.device_id)
            hub.drop_connection(device.device_id)
            await hub.wait_disconnected(device.device_id, timeout=STEP)
            # Queued while the device is away; delivered the moment its session resumes.
            await hub.send_c2d(device.device_id, b"while away", message_id="m1")
        assert [message.message_id for message in received] == ["m1"]
        await round_trips(client)  # the hub has processed the PUBACK
        assert hub.c2d_queue_length(device.device_id) == 0
        hub.drop_connection(device.device_id)
        await hub.wait_connected(device.device_id, timeout=STEP)
        assert hub.c2d_queue_length(device.device_id) == 0


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.MINIMUM_SUPPORTED], ids=lambda v: v.name
)
def test_an_ssl_context_allowing_tls_below_1_2_is_refused_naming_it(version: ssl.TLSVersion) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python's own warning about old TLS
        context.minimum_version = version
    with pytest.raises(ValueError, match=r"ssl_context allows .*TLS 1\.2"):
        aioiothub.IoTHubDeviceClient.from_connection_string(
            "HostName=h.example.net;DeviceId=d;SharedAccessKey=NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=",
            ssl_context=context,
        )


async def test_a_hub_side_close_is_logged_as_info_not_error(
    hub: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    device = hub.add_device(new_id("quiet"))
    caplog.set_level(logging.DEBUG, logger="aioiothub")
    async with device_client(hub, device) as client:
        states = client.connection_states()
        assert await take(states, 1) == [True]
        for _ in range(3):
            hub.drop_connection(device.device_id)
            assert await take(states, 2) == [False, True]
    errors = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert errors == [], [record.getMessage() for record in errors]
    assert any("connection lost" in record.getMessage() for record in caplog.records)


async def test_a_suback_missing_after_a_reconnect_is_one_more_reconnect_not_the_end(hub: Emulator) -> None:
    device = hub.add_device(new_id("suback"))
    policy = aioiothub.ReconnectPolicy(initial_delay=0.05, max_delay=0.2)
    async with device_client(hub, device, request_timeout=1.0, reconnect=policy) as client:
        requests = client.method_requests()
        answered: list[str] = []

        async def answer() -> None:
            async for request in requests:
                answered.append(request.name)
                await request.respond(200, {"ok": True})

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(answer)
            await wait_subscribed(hub, "$iothub/methods/POST/#", device.device_id)
            states = client.connection_states()
            assert await take(states, 1) == [True]
            hub.ignore_subscribes(1)
            hub.drop_connection(device.device_id)
            # The first reconnect's SUBSCRIBE gets no SUBACK within the deadline: that connection
            # is given up and another made, which restores the subscription.
            assert await take(states, 2, timeout=3 * STEP) == [False, True]
            await wait_subscribed(hub, "$iothub/methods/POST/#", device.device_id)
            result = await hub.invoke_method(device.device_id, "ping", None, timeout=STEP)
            tasks.cancel_scope.cancel()
    assert result.status == 200
    assert answered == ["ping"]
