"""End to end, as the official SDK's own tests run against a real hub: device SDK in, back end out.

The official Python device SDK (``azure-iot-device``, its venv, MQTT on 8883) sends telemetry with
system and custom properties -- across a dropped connection, connections the hub refuses while it
retries, and a SAS renewal (a 125 s token, which the SDK renews 120 s before it expires) -- and a
back end reads every message from the Event Hubs-compatible endpoint with ``azure-eventhub`` (its
venv, AMQPS on 5671, trusting the CA with ``connection_verify=``) and checks arrival, order, body,
properties and IoT Hub's annotations; a reported patch from the SDK reaches the same back end as a
``twinChangeEvents`` notification. Nothing in either SDK is changed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.emulator.amqp.surface import AMQPS_PORT
from tests.peer.script_steps import run_steps
from tests.peer.test_official_sdk import DEVICE_SCRIPT, SDK_PORT, SdkPeer

pytestmark = [pytest.mark.peer, pytest.mark.anyio]

HERE = Path(__file__).resolve().parent
RENEWING_TTL = 125
"""Seconds: the SDK renews a token 120 s before it expires, so this one is renewed after about 5 s."""



@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    async with Emulator(hostname="localhost", host="127.0.0.1", port=SDK_PORT, websocket_port=None) as emulator:
        yield emulator


async def _start_sdk(
    python: Path, hub: Emulator, device_id: str, log_path: Path, *, sastoken_ttl: int = RENEWING_TTL
) -> tuple[SdkPeer, Any]:
    with log_path.open("wb") as log:
        process = await anyio.open_process(
            [str(python), str(DEVICE_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
        )
    peer = SdkPeer(process, log_path)
    await peer.wait_ready()
    await peer.call(
        "connect",
        connection_string=hub.identity(device_id).connection_string,
        ca_pem=hub.ca_pem.decode("ascii"),
        handlers=[],
        sastoken_ttl=sastoken_ttl,
    )
    return peer, process


def _message(index: int, phase: str) -> dict[str, Any]:
    return {
        "body": json.dumps({"n": index, "phase": phase}),
        "message_id": f"e2e-{index}",
        "correlation_id": f"corr-{index}",
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "custom_properties": {"phase": phase, "index": str(index)},
    }


async def test_sdk_telemetry_across_drops_refusals_and_a_renewal_reaches_the_back_end(
    hub: Emulator, peer_python: Path, eventhub_python: Path, tmp_path: Path
) -> None:
    assert hub.amqp.tls_port == AMQPS_PORT, "azure-eventhub reaches AMQPS only on 5671, which is taken"
    hub.add_device("e2e")
    peer, _ = await _start_sdk(peer_python, hub, "e2e", tmp_path / "sdk.log")
    sent: list[tuple[int, str]] = []
    try:

        async def send(phase: str, count: int) -> None:
            for _ in range(count):
                index = len(sent)
                await peer.call("send_message", seconds=60, **_message(index, phase))
                sent.append((index, phase))

        async def reconnected() -> None:
            # The SDK refuses sends while it is disconnected; it tells when it is gone and when it is back.
            while await peer.next_event("connection_state", seconds=60) is not False:
                pass
            while await peer.next_event("connection_state", seconds=60) is not True:
                pass

        await send("connected", 3)
        assert hub.drop_connection("e2e")
        await reconnected()
        await send("after a drop", 3)
        hub.refuse_connects(2)
        assert hub.drop_connection("e2e")
        await reconnected()
        await send("after refusals", 3)
        first_connect = hub.identity("e2e").connection_state_updated_time
        # The renewal reconnects with a new token, which the SDK reports as a disconnect and a connect.
        await reconnected()
        await hub.wait_connected("e2e")
        assert hub.identity("e2e").connection_state_updated_time != first_connect
        await send("after a renewal", 3)
        report = await peer.shutdown()
        # The SDK reports each drop and each refused connect as a background error, and nothing else.
        errors = report["background_errors"]
        assert all(error.startswith(("ConnectionDroppedError:", "ConnectionFailedError:")) for error in errors), errors
        assert sum("Connection Refused" in error for error in errors) == 2, errors
    finally:
        await peer.stop()

    connection_string = hub.amqp.event_hub_connection_string()
    command = [str(eventhub_python), str(HERE / "sdk_eventhub_read.py"), connection_string, str(hub.ca_file),
               str(len(sent))]
    async with run_steps(command, tmp_path / "backend.log") as script:
        events = (await script.next_step("events", 90))["events"]
    # One device: one partition, in the order sent, each message once.
    assert len({event["partition"] for event in events}) == 1
    assert [json.loads(event["body"]) for event in events] == [{"n": index, "phase": phase} for index, phase in sent]
    for event, (index, phase) in zip(events, sent, strict=True):
        assert (event["message_id"], event["correlation_id"]) == (f"e2e-{index}", f"corr-{index}")
        assert (event["content_type"], event["content_encoding"]) == ("application/json", "utf-8")
        assert event["properties"] == {"phase": phase, "index": str(index)}
        annotations = event["annotations"]
        assert annotations["iothub-connection-device-id"] == "e2e"
        assert annotations["iothub-message-source"] == "Telemetry"
        assert annotations["iothub-connection-auth-generation-id"] == hub.identity("e2e").generation_id


async def test_a_reported_patch_from_the_sdk_reaches_the_back_end_as_a_twin_change_event(
    peer_python: Path, eventhub_python: Path, tmp_path: Path
) -> None:
    routes = ["DeviceMessages", "TwinChangeEvents"]
    async with Emulator(
        hostname="localhost", host="127.0.0.1", port=SDK_PORT, websocket_port=None, event_sources=routes
    ) as hub:
        assert hub.amqp.tls_port == AMQPS_PORT, "azure-eventhub reaches AMQPS only on 5671, which is taken"
        hub.add_device("e2e-twin")
        peer, _ = await _start_sdk(peer_python, hub, "e2e-twin", tmp_path / "sdk.log", sastoken_ttl=3600)
        try:
            await peer.call("patch_reported", patch={"firmware": "2.1", "battery": 87})
            await peer.call("send_message", **_message(0, "after the patch"))
            assert (await peer.shutdown())["background_errors"] == []
        finally:
            await peer.stop()
        command = [str(eventhub_python), str(HERE / "sdk_eventhub_read.py"), hub.amqp.event_hub_connection_string(),
                   str(hub.ca_file), "2"]
        async with run_steps(command, tmp_path / "backend.log") as script:
            change, telemetry = (await script.next_step("events", 90))["events"]
    assert change["annotations"]["iothub-message-source"] == "twinChangeEvents"
    assert change["annotations"]["iothub-connection-device-id"] == "e2e-twin"
    assert change["properties"]["iothub-message-schema"] == "twinChangeNotification"
    assert change["properties"]["opType"] == "updateTwin"
    assert change["properties"]["deviceId"] == "e2e-twin"
    reported = json.loads(change["body"])["properties"]["reported"]
    assert (reported["firmware"], reported["battery"]) == ("2.1", 87)
    assert telemetry["annotations"]["iothub-message-source"] == "Telemetry"
    assert json.loads(telemetry["body"]) == {"n": 0, "phase": "after the patch"}
