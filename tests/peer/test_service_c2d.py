"""Peer test: Microsoft's Python service SDK sends cloud-to-device messages over AMQP.

``azure-iot-hub``'s ``IoTHubRegistryManager.send_c2d_message`` (uamqp: SASL MSSBCBS, a put-token
for ``https://{HostName}``, AMQPS on 5671 whatever port the host name carries) runs unmodified in the
service venv, trusting the emulator's CA through ``SSL_CERT_FILE`` as a user of a real hub would
configure OpenSSL. It sends to the official Python device SDK (in the device venv, on 8883), to an
aioiothub device, and to a device that does not exist.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.amqp.surface import AMQPS_PORT
from tests.peer.script_steps import run_steps
from tests.peer.test_official_sdk import SDK_PORT, PeerLauncher, received_body, wait_until

pytestmark = [pytest.mark.peer, pytest.mark.anyio]

HERE = Path(__file__).resolve().parent



@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator(hostname="localhost", host="127.0.0.1", port=SDK_PORT, websocket_port=0) as emulator:
        emulator.add_device("dev1")
        yield emulator


async def test_send_c2d_message_reaches_the_official_sdk_and_an_aioiothub_device(
    hub: Emulator, peer_python: Path, service_python: Path, tmp_path: Path
) -> None:
    assert hub.amqp.tls_port == AMQPS_PORT, "uamqp reaches AMQPS only on 5671, which is taken"
    aio = hub.add_device("aio1")
    async with AsyncExitStack() as stack:
        peer = await PeerLauncher(peer_python, hub, stack, tmp_path).device("dev1", handlers=("message",))
        client = await stack.enter_async_context(
            aioiothub.IoTHubDeviceClient.from_connection_string(
                aio.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
            )
        )
        messages = aiter(client.cloud_messages())
        script_path = str(HERE / "sdk_c2d.py")
        command = [str(service_python), script_path, hub.service_connection_string, "dev1", "aio1", "ghost"]
        env = {**os.environ, "SSL_CERT_FILE": str(hub.ca_file)}
        async with run_steps(command, tmp_path / "service-c2d.log", env=env) as script:
            assert await script.next_step("sent", 60) == {"step": "sent", "device_id": "dev1"}
            assert await script.next_step("sent") == {"step": "sent", "device_id": "aio1"}
            refused = await script.next_step("refused")
            assert refused["device_id"] == "ghost"
            await script.next_step("done")

        event = await peer.next_event("message")
        assert json.loads(received_body(event)) == {"n": 0}
        assert (event["message_id"], event["correlation_id"]) == ("svc-0", "corr-0")
        assert (event["content_type"], event["content_encoding"]) == ("application/json", "utf-8")
        assert event["custom_properties"] == {"room": "lab"}
        await wait_until(lambda: hub.c2d_queue_length("dev1") == 0, "the hub to see the SDK's PUBACK")

        with anyio.fail_after(15):
            received = await anext(messages)
        assert json.loads(received.body) == {"n": 1}
        assert (received.message_id, received.correlation_id) == ("svc-1", "corr-1")
        assert (received.content_type, received.content_encoding) == ("application/json", "utf-8")
        assert received.properties == {"room": "lab"}
        assert received.ack == "none"


async def test_the_iot_hub_connection_string_redirect_as_the_event_hubs_sample_follows_it(
    service_python: Path, tmp_path: Path
) -> None:
    async with Emulator(hostname="localhost", host="127.0.0.1", websocket_port=0) as hub:
        assert hub.amqp.tls_port == AMQPS_PORT, "uamqp reaches AMQPS only on 5671, which is taken"
        command = [str(service_python), str(HERE / "sdk_redirect.py"), hub.service_connection_string]
        env = {**os.environ, "SSL_CERT_FILE": str(hub.ca_file)}
        async with run_steps(command, tmp_path / "redirect.log", env=env) as script:
            redirect = await script.next_step("redirect", 60)
        assert redirect["hostname"] == "localhost"
        entity = f"{hub.amqp.event_hub_name}/ConsumerGroups/$Default/Partitions/0"
        assert redirect["address"] == f"amqps://localhost:5671/{entity}"
        # What the sample builds from the redirect is the string the emulator prints for that policy.
        assert redirect["event_hub_connection_string"] == hub.amqp.event_hub_connection_string("iothubowner")
