"""Remote control for an official ``azure-iot-device`` client, driven over stdin/stdout.

This file runs under the peer virtual environment's interpreter (where ``azure-iot-device`` and its
``paho-mqtt<2`` live), never under pytest, so it imports nothing from ``aioiothub``. The entry
scripts ``sdk_device.py`` and ``sdk_module.py`` pick the client class.

Wire format: one JSON object per line. On start the driver writes
``{"ready": true, "sdk_version": ..., "paho_version": ...}``. Then each command line
``{"op": NAME, ...arguments}`` gets exactly one answer line, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "Type: text", "traceback": ...}``. Whatever the SDK receives (messages,
method requests, desired-property patches) is queued per kind and handed out by the
``next_event`` command, so the test decides when to look and how long to wait.

Only the answer lines go to stdout: file descriptor 1 is re-pointed at stderr before the SDK is
imported, so stray output from the SDK or paho cannot corrupt the channel.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any, TextIO

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

HANDLER_KINDS = ("message", "method", "twin_patch")
"""Receive handlers a ``connect`` command may install; each subscribes when it is set."""


def _claim_stdout() -> TextIO:
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _message_record(message: Any) -> dict[str, Any]:
    data = message.data
    if isinstance(data, str):
        data = data.encode("utf-8")
    return {
        "data_b64": base64.b64encode(bytes(data)).decode("ascii"),
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "user_id": message.user_id,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "expiry_time_utc": None if message.expiry_time_utc is None else str(message.expiry_time_utc),
        "ack": message.ack,
        "input_name": message.input_name,
        "custom_properties": dict(message.custom_properties),
    }


class Driver:
    """Owns one SDK client and answers the test's commands.

    Args:
        sdk: the imported ``azure.iot.device`` package (with ``aio`` loaded).
        client_class_name: ``"IoTHubDeviceClient"`` or ``"IoTHubModuleClient"``.
    """

    def __init__(self, sdk: Any, client_class_name: str) -> None:
        self._sdk = sdk
        self._client_class = getattr(sdk.aio, client_class_name)
        self._client: Any = None
        self._loop = asyncio.get_running_loop()
        self._events: dict[str, asyncio.Queue[Any]] = {}
        self._method_response: tuple[int, Any] = (200, None)
        self._closing = False
        self._unexpected_disconnects = 0
        self._background_errors: list[str] = []
        self.commands: dict[str, Handler] = {
            "connect": self.connect,
            "send_message": self.send_message,
            "get_twin": self.get_twin,
            "patch_reported": self.patch_reported,
            "set_method_response": self.set_method_response,
            "next_event": self.next_event,
            "shutdown": self.shutdown,
        }

    def _queue(self, kind: str) -> asyncio.Queue[Any]:
        return self._events.setdefault(kind, asyncio.Queue())

    def _post(self, kind: str, value: Any) -> None:
        # SDK handlers run on the SDK's own loop and threads, not on this loop.
        self._loop.call_soon_threadsafe(self._queue(kind).put_nowait, value)

    @property
    def client(self) -> Any:
        """The connected SDK client."""
        if self._client is None:
            raise RuntimeError("send a connect command first")
        return self._client

    async def connect(self, command: dict[str, Any]) -> Any:
        """Create the client from a connection string, connect, then install the asked-for handlers."""
        client = self._client_class.create_from_connection_string(
            command["connection_string"],
            server_verification_cert=command["ca_pem"],
            sastoken_ttl=command.get("sastoken_ttl", 3600),
        )
        self._client = client

        def on_state_change() -> None:
            if not client.connected and not self._closing:
                self._unexpected_disconnects += 1
            self._post("connection_state", client.connected)

        def on_background_exception(error: Exception) -> None:
            self._background_errors.append(f"{type(error).__name__}: {error}")

        client.on_connection_state_change = on_state_change
        client.on_background_exception = on_background_exception
        await asyncio.wait_for(client.connect(), command.get("timeout", 30))
        for kind in command.get("handlers", []):
            if kind not in HANDLER_KINDS:
                raise ValueError(f"unknown handler kind {kind!r}")
            # The setters block until the SDK's SUBSCRIBE is acknowledged.
            await asyncio.to_thread(self._install_handler, kind)
        return {"connected": client.connected}

    def _install_handler(self, kind: str) -> None:
        client = self.client
        if kind == "message":

            async def on_message(message: Any) -> None:
                self._post("message", _message_record(message))

            client.on_message_received = on_message
        elif kind == "method":

            async def on_method(request: Any) -> None:
                seen = {"name": request.name, "payload": request.payload, "request_id": request.request_id}
                self._post("method", seen)
                status, payload = self._method_response
                response = self._sdk.MethodResponse.create_from_method_request(request, status, payload)
                await client.send_method_response(response)

            client.on_method_request_received = on_method
        else:

            async def on_patch(patch: Any) -> None:
                self._post("twin_patch", patch)

            client.on_twin_desired_properties_patch_received = on_patch

    def _build_message(self, command: dict[str, Any]) -> Any:
        message = self._sdk.Message(
            command["body"],
            message_id=command.get("message_id"),
            content_encoding=command.get("content_encoding"),
            content_type=command.get("content_type"),
        )
        message.correlation_id = command.get("correlation_id")
        message.user_id = command.get("user_id")
        message.custom_properties = dict(command.get("custom_properties", {}))
        return message

    async def send_message(self, command: dict[str, Any]) -> Any:
        """Send telemetry, or with ``output_name`` (module clients) a message to that output."""
        message = self._build_message(command)
        output_name = command.get("output_name")
        if output_name is None:
            operation = self.client.send_message(message)
        else:
            operation = self.client.send_message_to_output(message, output_name)
        await asyncio.wait_for(operation, command.get("timeout", 20))
        return None

    async def get_twin(self, command: dict[str, Any]) -> Any:
        """Return the twin document the SDK received."""
        return await asyncio.wait_for(self.client.get_twin(), command.get("timeout", 20))

    async def patch_reported(self, command: dict[str, Any]) -> Any:
        """Send a reported-properties patch and wait for the hub's acknowledgement."""
        await asyncio.wait_for(self.client.patch_twin_reported_properties(command["patch"]), command.get("timeout", 20))
        return None

    async def set_method_response(self, command: dict[str, Any]) -> Any:
        """Choose the status and payload the method handler answers with from now on."""
        self._method_response = (int(command["status"]), command.get("payload"))
        return None

    async def next_event(self, command: dict[str, Any]) -> Any:
        """Hand out the oldest unclaimed event of a kind, waiting up to ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self._queue(command["kind"]).get(), command.get("timeout", 10))
        except TimeoutError:
            raise TimeoutError(f"no {command['kind']!r} event within {command.get('timeout', 10)} s") from None

    async def shutdown(self, command: dict[str, Any]) -> Any:
        """Shut the client down and report what went wrong in the background meanwhile."""
        self._closing = True
        if self._client is not None:
            await asyncio.wait_for(self._client.shutdown(), command.get("timeout", 20))
        return {"unexpected_disconnects": self._unexpected_disconnects, "background_errors": self._background_errors}


async def _read_commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _serve(client_class_name: str, channel: TextIO) -> None:
    # Imported only now, after stdout has been claimed.
    import azure.iot.device.aio

    driver = Driver(azure.iot.device, client_class_name)

    def answer(payload: dict[str, Any]) -> None:
        channel.write(json.dumps(payload) + "\n")
        channel.flush()

    answer(
        {
            "ready": True,
            "sdk_version": metadata.version("azure-iot-device"),
            "paho_version": metadata.version("paho-mqtt"),
        }
    )
    reader = await _read_commands()
    while True:
        line = await reader.readline()
        if not line:
            # The test went away: leave without waiting for anyone.
            await driver.shutdown({"timeout": 5})
            return
        command = json.loads(line)
        op = command.get("op")
        try:
            handler = driver.commands[op]
            result = await handler(command)
        except Exception as exc:
            answer({"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        else:
            answer({"ok": True, "result": result})
        if op == "shutdown":
            return


def main(client_class_name: str) -> None:
    """Run the command loop for ``azure.iot.device.aio.<client_class_name>`` until ``shutdown``."""
    channel = _claim_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # paho logs every packet at DEBUG: the first thing to read when the hub and the SDK disagree.
    logging.getLogger("paho").setLevel(logging.DEBUG)
    logging.getLogger("azure.iot.device").setLevel(logging.INFO)
    asyncio.run(_serve(client_class_name, channel))
