"""Peer tests: Microsoft's Node.js SDKs, unmodified, against the emulator.

* ``azure-iothub`` (``Registry``, ``Client.invokeDeviceMethod``) drives the service REST API while an
  aioiothub device and module answer.
* ``azure-iot-device`` + ``azure-iot-device-mqtt`` is a second device SDK: telemetry with
  properties, twin read and reported update, desired patches, a method round trip, and a
  cloud-to-device message with properties.

The SDKs come from the npm registry (pinned by ``node/package-lock.json``) into ``.peer-node-iot``.
Both connect to the standard ports only -- HTTPS 443, MQTT 8883 -- so the emulator listens on those
(run inside a network namespace, as root) and the SDKs trust its CA through ``NODE_EXTRA_CA_CERTS``.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import anyio.abc
import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.protocol.connect import MQTT_PORT, WEBSOCKET_PORT
from aioiothub.protocol.topics import METHODS_SUBSCRIPTION, TWIN_DESIRED_SUBSCRIPTION, c2d_subscription
from tests.peer.npm_packages import NpmInstallError, node_executable
from tests.peer.script_steps import answer_methods, run_steps

pytestmark = [pytest.mark.peer, pytest.mark.node, pytest.mark.anyio]

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"


@pytest.fixture(scope="session")
def node_modules(node_sdk: Path) -> Path:
    return node_sdk


def _node_command(script: str, *arguments: str) -> list[str]:
    try:
        node = node_executable()
    except NpmInstallError as exc:
        pytest.fail(str(exc), pytrace=False)
    return [node, str(NODE_DIR / script), *arguments]


def _environment(hub: Emulator, node_modules: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "NODE_PATH": str(node_modules), "NODE_EXTRA_CA_CERTS": str(hub.ca_file), **extra}



async def test_node_service_sdk_drives_the_emulator(node_modules: Path, tmp_path: Path) -> None:
    async with Emulator(port=MQTT_PORT, websocket_port=WEBSOCKET_PORT) as hub:
        assert hub.service_connection_string.startswith("HostName=localhost;SharedAccessKeyName=iothubowner;")
        device = hub.add_device("node-svc")
        module = hub.add_module("node-svc", "mod")
        options = {"port": hub.port, "ssl_context": hub.client_ssl_context()}
        device_calls: list[object] = []
        module_calls: list[object] = []
        async with (
            aioiothub.IoTHubDeviceClient.from_connection_string(device.connection_string, **options) as client,
            aioiothub.IoTHubModuleClient.from_connection_string(module.connection_string, **options) as module_client,
            anyio.create_task_group() as tasks,
        ):
            await client.update_reported_properties({"battery": 80})
            tasks.start_soon(answer_methods, client, device_calls)
            tasks.start_soon(answer_methods, module_client, module_calls)
            await hub.wait_subscribed("node-svc", METHODS_SUBSCRIPTION)
            await hub.wait_subscribed("node-svc", METHODS_SUBSCRIPTION, "mod")
            command = _node_command("service.js", hub.service_connection_string, "node-svc", "mod")
            async with run_steps(command, tmp_path / "node-service.log", env=_environment(hub, node_modules)) as script:
                created = await script.next_step("created")
                assert created["deviceId"] == "node-created"
                assert created["status"] == "enabled"
                assert created["primaryKey"] == hub.identity("node-created").primary_key
                assert (await script.next_step("create again"))["error"] == "DeviceAlreadyExistsError"
                assert (await script.next_step("listed"))["deviceIds"] == ["node-svc", "node-created"]
                twin = await script.next_step("twin")
                assert twin["reported"]["battery"] == 80
                updated = await script.next_step("twin updated")
                assert updated["tags"] == {"site": "n1"}
                assert updated["desired"]["mode"] == "eco"
                assert hub.twin("node-svc")["desired"] == {"mode": "eco", "$version": 2}
                device_method = await script.next_step("device method")
                assert device_method["status"] == 200
                assert device_method["payload"] == {"echo": {"n": 2}}
                assert device_calls == [("echo", {"n": 2})]
                module_method = await script.next_step("module method")
                assert module_method["payload"] == {"echo": "node"}
                assert module_calls == [("echo", "node")]
                assert (await script.next_step("deleted"))["error"] == "DeviceNotFoundError"
                assert [identity.label for identity in hub.identities()] == ["node-svc", "node-svc/mod"]
            tasks.cancel_scope.cancel()


async def test_node_device_sdk_against_the_emulator(node_modules: Path, tmp_path: Path) -> None:
    async with Emulator(port=MQTT_PORT, websocket_port=WEBSOCKET_PORT) as hub:
        device = hub.add_device("node-dev")
        await hub.update_desired("node-dev", {"interval": 5})
        env = _environment(hub, node_modules, DEVICE_CONNECTION_STRING=device.connection_string)
        async with run_steps(_node_command("device.js"), tmp_path / "node-device.log", env=env) as script:
            await script.next_step("connected")
            await script.next_step("sent")
            (record,) = await hub.wait_for_telemetry(1, device_id="node-dev")
            assert record.json() == {"temperature": 21.5}
            assert record.properties == {"alert": "high"}
            assert record.system_properties["$.mid"] == "node-1"
            assert record.system_properties["$.ct"] == "application/json"
            twin = await script.next_step("twin")
            assert twin["desired"] == {"interval": 5, "$version": 2}
            await script.next_step("reported")
            assert hub.twin("node-dev")["reported"] == {"fw": "2.0", "$version": 2}
            await script.next_step("listening")

            await hub.wait_subscribed("node-dev", TWIN_DESIRED_SUBSCRIPTION)
            version = await hub.update_desired("node-dev", {"interval": 9})
            desired = await script.next_step("desired")
            assert desired["patch"] == {"interval": 9, "$version": version}

            await hub.wait_subscribed("node-dev", METHODS_SUBSCRIPTION)
            result = await hub.invoke_method("node-dev", "echo", {"x": [1, 2]}, timeout=10)
            method = await script.next_step("method")
            assert method == {"step": "method", "name": "echo", "payload": {"x": [1, 2]}}
            assert result.status == 200
            assert result.payload == {"echo": {"x": [1, 2]}}

            await hub.wait_subscribed("node-dev", c2d_subscription("node-dev"))
            message_id = await hub.send_c2d("node-dev", b"switch on", properties={"k": "v"}, ack="positive")
            message = await script.next_step("message")
            assert message["data"] == "switch on"
            assert message["messageId"] == message_id
            assert message["properties"]["k"] == "v"
            (feedback,) = await hub.wait_for_feedback(1, "node-dev")
            assert feedback.original_message_id == message_id
            assert feedback.status == "Success"
            assert hub.c2d_queue_length("node-dev") == 0


async def test_node_service_sdk_sends_c2d_and_reads_feedback_and_file_notifications_over_amqp(
    node_modules: Path, tmp_path: Path
) -> None:
    async with Emulator(port=MQTT_PORT, websocket_port=WEBSOCKET_PORT) as hub:
        assert hub.amqp.tls_port == 5671, "the Node service SDK reaches AMQPS on 5671, which is taken"
        device = hub.add_device("node-c2d")
        command = _node_command("service_c2d.js", hub.service_connection_string, "node-c2d")
        async with (
            aioiothub.IoTHubDeviceClient.from_connection_string(
                device.connection_string, port=hub.port, ssl_context=hub.client_ssl_context()
            ) as client,
            run_steps(command, tmp_path / "node-c2d.log", env=_environment(hub, node_modules)) as script,
        ):
            messages = aiter(client.cloud_messages())
            await script.next_step("receiving", 60)
            await script.next_step("sent")
            assert (await script.next_step("refused"))["error"] == "DeviceNotFoundError"
            with anyio.fail_after(15):
                received = await anext(messages)  # taken, so acknowledged: "Success" feedback
            assert received.body == b'{"command":"on"}'
            assert (received.message_id, received.correlation_id) == ("node-c2d-1", "node-corr")
            assert (received.content_type, received.ack) == ("application/json", "full")
            assert received.properties == {"room": "hall"}

            feedback = await script.next_step("feedback")
            assert feedback["contentType"] == "application/vnd.microsoft.iothub.feedback.json"
            (record,) = feedback["records"]
            assert record["originalMessageId"] == "node-c2d-1"
            assert (record["statusCode"], record["description"]) == ("Success", "Success")
            assert record["deviceId"] == "node-c2d"
            assert record["deviceGenerationId"] == device.generation_id

            async with aioiothub.IoTHubDeviceClient.from_connection_string(
                device.connection_string, port=hub.websocket_port, websockets=True, ssl_context=hub.client_ssl_context()
            ) as uploader:
                await uploader.upload_file("node/report.json", b'{"ok": true}')
            notification = (await script.next_step("file notification"))["notification"]
            assert notification["deviceId"] == "node-c2d"
            assert notification["blobName"] == "node-c2d/node/report.json"
            assert notification["blobSizeInBytes"] == 12
        assert len(hub.core.queues.feedback_outbox) == 0
        assert len(hub.core.file_notifications) == 0
