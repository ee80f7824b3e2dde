"""Remote control for the official ``azure-iot-device`` provisioning client, then its device client.

Runs under the peer virtual environment's interpreter (never under pytest) and speaks the same
JSON-lines protocol as ``sdk_driver.py``: a greeting, then one answer line per command line.

Commands:

* ``register`` -- ``ProvisioningDeviceClient.create_from_symmetric_key`` (``symmetric_key``, or
  ``group_key``, from which the device key is derived as Microsoft's samples derive it) or
  ``create_from_x509_certificate`` (``cert_file``, ``key_file``), with the emulator's CA as
  ``server_verification_cert`` and an optional ``payload``; answers the registration result, or
  ``{"error": ...}`` when the SDK raised.
* ``connect_hub`` -- ``IoTHubDeviceClient`` for the assigned hub and device id with the same
  credential; ``send_message`` -- telemetry; ``shutdown`` -- shut the hub client down.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import sys
import traceback
from importlib import metadata
from typing import Any

from sdk_driver import _claim_stdout


def derive_device_key(group_key: str, registration_id: str) -> str:
    """The device key of a group enrollment, exactly as the SDK samples compute it."""
    signature = hmac.HMAC(base64.b64decode(group_key), registration_id.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(signature.digest()).decode("utf-8")


class ProvisioningDriver:
    """One registration and the hub client that follows it."""

    def __init__(self, sdk: Any) -> None:
        self._sdk = sdk
        self._credential: dict[str, Any] = {}
        self._client: Any = None

    async def register(self, command: dict[str, Any]) -> Any:
        provisioning = self._sdk.aio.ProvisioningDeviceClient
        common = {
            "provisioning_host": command["provisioning_host"],
            "registration_id": command["registration_id"],
            "id_scope": command["id_scope"],
            "server_verification_cert": command["ca_pem"],
        }
        if "cert_file" in command:
            x509 = self._sdk.X509(command["cert_file"], command["key_file"])
            self._credential = {"x509": x509}
            client = provisioning.create_from_x509_certificate(x509=x509, **common)
        else:
            key = command.get("symmetric_key") or derive_device_key(command["group_key"], command["registration_id"])
            self._credential = {"symmetric_key": key}
            client = provisioning.create_from_symmetric_key(symmetric_key=key, **common)
        if "payload" in command:
            client.provisioning_payload = command["payload"]
        try:
            result = await asyncio.wait_for(client.register(), command.get("timeout", 60))
        except Exception as exc:
            if command.get("allow_error"):
                # The SDK wraps the service's answer (ClientError caused by ServiceError): report the chain.
                chain: list[BaseException] = [exc]
                while chain[-1].__cause__ is not None and len(chain) < 5:
                    chain.append(chain[-1].__cause__)
                return {"error": " <- ".join(f"{type(error).__name__}: {error}" for error in chain)}
            raise
        state = result.registration_state
        return {
            "status": result.status,
            "operation_id": result.operation_id,
            "device_id": state.device_id,
            "assigned_hub": state.assigned_hub,
            "sub_status": state.sub_status,
            "etag": state.etag,
            "payload": json.loads(state.response_payload),
        }

    async def connect_hub(self, command: dict[str, Any]) -> Any:
        device_client = self._sdk.aio.IoTHubDeviceClient
        common = {
            "hostname": command["hostname"],
            "device_id": command["device_id"],
            "server_verification_cert": command["ca_pem"],
        }
        if "x509" in self._credential:
            self._client = device_client.create_from_x509_certificate(x509=self._credential["x509"], **common)
        else:
            self._client = device_client.create_from_symmetric_key(
                symmetric_key=self._credential["symmetric_key"], **common
            )
        await asyncio.wait_for(self._client.connect(), command.get("timeout", 30))
        return {"connected": self._client.connected}

    async def send_message(self, command: dict[str, Any]) -> Any:
        message = self._sdk.Message(command["body"])
        await asyncio.wait_for(self._client.send_message(message), command.get("timeout", 20))
        return None

    async def shutdown(self, command: dict[str, Any]) -> Any:
        if self._client is not None:
            await asyncio.wait_for(self._client.shutdown(), command.get("timeout", 20))
        return {"unexpected_disconnects": 0, "background_errors": []}


async def _serve(channel: Any) -> None:
    import azure.iot.device.aio

    driver = ProvisioningDriver(azure.iot.device)
    commands = {
        "register": driver.register,
        "connect_hub": driver.connect_hub,
        "send_message": driver.send_message,
        "shutdown": driver.shutdown,
    }

    def answer(payload: dict[str, Any]) -> None:
        channel.write(json.dumps(payload) + "\n")
        channel.flush()

    answer({"ready": True, "sdk_version": metadata.version("azure-iot-device")})
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            await driver.shutdown({"timeout": 5})
            return
        command = json.loads(line)
        op = command.get("op")
        try:
            result = await commands[op](command)
        except Exception as exc:
            answer({"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        else:
            answer({"ok": True, "result": result})
        if op == "shutdown":
            return


if __name__ == "__main__":
    channel = _claim_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("paho").setLevel(logging.DEBUG)
    logging.getLogger("azure.iot.device").setLevel(logging.INFO)
    asyncio.run(_serve(channel))
