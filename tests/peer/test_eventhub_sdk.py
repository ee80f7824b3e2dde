"""Peer test: a back end reads device telemetry from the emulator's Event Hubs-compatible endpoint.

``azure-eventhub`` runs unmodified in a venv of its own (``.peer-venv-eventhub``), with the
connection string ``Emulator.amqp.event_hub_connection_string()`` gives -- the one the portal shows
for a real hub -- once over AMQPS on 5671 trusting the emulator's CA through ``connection_verify=``,
once over plain AMQP with ``UseDevelopmentEmulator=true``. An aioiothub device (aiomqtt transport)
and module (native transport) send messages with system and application properties; the test checks
what the SDK read: bodies, properties, IoT Hub's annotations, partitions, offsets, a resume from a
checkpoint, the asyncio client from a sequence number, and a wrong key refused. With the
``TwinChangeEvents`` route on, the SDK reads the twin changes of a device's reported and desired
properties beside its telemetry, as a back end replicating twins does.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.emulator.amqp.surface import AMQPS_PORT
from tests.peer.script_steps import run_steps

pytestmark = [pytest.mark.peer, pytest.mark.anyio]

HERE = Path(__file__).resolve().parent
WRONG_KEY = base64.b64encode(b"\x01" * 32).decode()



async def _send_telemetry(hub: Emulator) -> list[tuple[str, str | None, str]]:
    """Three messages from a device and two from a module; returns (device, module, body) sent."""
    device = hub.add_device("eh-dev")
    module = hub.add_module("eh-dev", "eh-mod")
    options: dict[str, Any] = {"port": hub.port, "ssl_context": hub.client_ssl_context()}
    sent: list[tuple[str, str | None, str]] = []
    async with (
        aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, transport="aiomqtt", **options
        ) as client,
        aioiothub.IoTHubModuleClient.from_connection_string(
            module.connection_string, transport="native", **options
        ) as module_client,
    ):
        for index in range(3):
            body = f'{{"n":{index}}}'
            await client.send_message(
                aioiothub.Message(
                    body,
                    message_id=f"m{index}",
                    correlation_id="c1",
                    content_type="application/json",
                    content_encoding="utf-8",
                    properties={"alert": str(index)},
                )
            )
            sent.append(("eh-dev", None, body))
        for index in range(2):
            body = f"module {index}"
            await module_client.send_message(aioiothub.Message(body, properties={"from": "module"}))
            sent.append(("eh-dev", "eh-mod", body))
    return sent


@pytest.mark.parametrize("listener", ["amqps", "plain"])
async def test_azure_eventhub_reads_what_devices_sent(eventhub_python: Path, tmp_path: Path, listener: str) -> None:
    async with Emulator(amqp_plain_port=0) as hub:
        if listener == "amqps":
            assert hub.amqp.tls_port == AMQPS_PORT, "azure-eventhub reaches AMQPS only on 5671, which is taken"
        sent = await _send_telemetry(hub)
        plain = listener == "plain"
        connection_string = hub.amqp.event_hub_connection_string(plain=plain)
        ca = "-" if plain else str(hub.ca_file)
        script_path = str(HERE / "sdk_eventhub.py")
        command = [str(eventhub_python), script_path, connection_string, ca, str(len(sent)), WRONG_KEY]
        async with run_steps(command, tmp_path / f"eventhub-{listener}.log") as script:
            eventhub = await script.next_step("eventhub")
            assert eventhub["name"] == hub.amqp.event_hub_name
            assert eventhub["partition_ids"] == ["0", "1", "2", "3"]

            events = (await script.next_step("events"))["events"]
            assert sorted(event["body"] for event in events) == sorted(body for _, _, body in sent)
            # One device's messages -- its modules' too -- share a partition, in the order they were sent.
            assert len({event["partition"] for event in events}) == 1
            assert [event["sequence_number"] for event in events] == list(range(len(sent)))
            first = events[0]
            assert first["body"] == '{"n":0}'
            assert first["properties"] == {"alert": "0"}
            assert (first["message_id"], first["correlation_id"]) == ("m0", "c1")
            assert (first["content_type"], first["content_encoding"]) == ("application/json", "utf-8")
            annotations = first["annotations"]
            assert annotations["iothub-connection-device-id"] == "eh-dev"
            assert "iothub-connection-module-id" not in annotations
            assert annotations["iothub-message-source"] == "Telemetry"
            assert annotations["iothub-connection-auth-generation-id"] == hub.identity("eh-dev").generation_id
            assert annotations["x-opt-sequence-number"] == 0
            module_event = events[3]
            assert module_event["body"] == "module 0"
            assert module_event["properties"] == {"from": "module"}
            assert module_event["annotations"]["iothub-connection-module-id"] == "eh-mod"

            partition = await script.next_step("partition")
            assert partition["id"] == first["partition"]
            assert partition["beginning_sequence_number"] == 0
            assert partition["last_enqueued_sequence_number"] == len(sent) - 1
            assert partition["last_enqueued_offset"] == events[-1]["offset"]
            assert partition["is_empty"] is False

            resumed = await script.next_step("resumed")
            # A checkpoint's offset is exclusive: reading resumes with the event after it.
            assert [event["body"] for event in resumed["events"]] == [body for _, _, body in sent[1:]]
            from_sequence = (await script.next_step("async"))["events"]
            assert [event["body"] for event in from_sequence] == [sent[-1][2]]

            wrong = await script.next_step("wrong key")
            assert wrong["error"] == "AuthenticationError"
            assert "signature does not match" in wrong["message"]


async def test_azure_eventhub_reads_twin_change_events(eventhub_python: Path, tmp_path: Path) -> None:
    async with Emulator(event_sources=["DeviceMessages", "TwinChangeEvents"], amqp_port=None, amqp_plain_port=0) as hub:
        device = hub.add_device("eh-twin")
        async with aioiothub.IoTHubDeviceClient.from_connection_string(
            device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context(), transport="native"
        ) as client:
            await client.send_message("before the patch")
            await client.update_reported_properties({"firmware": "1.2.0"})
        await hub.update_desired("eh-twin", {"interval": 30})
        command = [
            str(eventhub_python), str(HERE / "sdk_eventhub.py"), "notifications",
            hub.amqp.event_hub_connection_string(plain=True), "-", "3",
        ]
        async with run_steps(command, tmp_path / "eventhub-notifications.log") as script:
            telemetry, reported, desired = (await script.next_step("notifications"))["events"]
    assert telemetry["body"] == "before the patch"
    assert telemetry["annotations"]["iothub-message-source"] == "Telemetry"
    for event in (reported, desired):
        assert event["partition"] == telemetry["partition"]
        assert event["annotations"]["iothub-message-source"] == "twinChangeEvents"
        assert event["annotations"]["iothub-connection-device-id"] == "eh-twin"
        assert (event["content_type"], event["content_encoding"]) == ("application/json", "utf-8")
        assert event["user_id"] == hub.hostname
        assert event["properties"]["opType"] == "updateTwin"
        assert event["properties"]["iothub-message-schema"] == "twinChangeNotification"
        assert (event["properties"]["hubName"], event["properties"]["deviceId"]) == (hub.hostname, "eh-twin")
        assert event["properties"]["operationTimestamp"].endswith("Z")
    assert [event["sequence_number"] for event in (telemetry, reported, desired)] == [0, 1, 2]
    section = reported["json"]["properties"]["reported"]
    assert (section["firmware"], section["$version"]) == ("1.2.0", 2)
    assert section["$metadata"]["firmware"]["$lastUpdated"] == reported["properties"]["operationTimestamp"]
    assert desired["json"]["version"] == 3
    assert desired["json"]["properties"]["desired"]["interval"] == 30
    assert desired["json"]["properties"]["desired"]["$metadata"]["$lastUpdatedVersion"] == 2
