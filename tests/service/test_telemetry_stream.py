"""The emulator's telemetry stream (``GET /emulator/…/telemetry/stream``) over HTTPS: idle streams, leaving clients."""

from __future__ import annotations

import json

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.emulator.service_api import emulator_routes
from aioiothub.testing import EmulatedDevice
from tests.service.service_helpers import policy_token, service_client

pytestmark = pytest.mark.anyio

#: The keep-alive interval the tests run with, so that several pass in a fraction of a second.
SHORT_KEEPALIVE = 0.05


@pytest.mark.parametrize(("query", "keep_alive"), [({}, ": keep-alive"), ({"format": "jsonl"}, "")])
async def test_an_idle_stream_sends_keep_alives_and_then_telemetry(
    transport: str,
    iothub_emulator: Emulator,
    iothub_device: EmulatedDevice,
    monkeypatch: pytest.MonkeyPatch,
    query: dict[str, str],
    keep_alive: str,
) -> None:
    monkeypatch.setattr(emulator_routes, "_KEEPALIVE", SHORT_KEEPALIVE)
    async with service_client(iothub_emulator, "service") as http:
        async with http.stream("GET", "/emulator/telemetry/stream", params=query) as stream:
            lines = stream.aiter_lines()
            with anyio.fail_after(5):
                if not query:
                    assert await anext(lines) == ": following telemetry"
                # Several idle periods in a row: each one is a keep-alive, and the stream goes on.
                idle = 0
                while idle < 3:
                    line = await anext(lines)
                    if line == keep_alive:
                        idle += 1
                    else:
                        assert line == "", line
                await iothub_device.client.send_message({"t": 1})
                async for line in lines:
                    if line.startswith(("data: ", "{")):
                        record = json.loads(line.removeprefix("data: "))
                        break
        assert record["deviceId"] == iothub_device.device_id
        assert record["body"] == {"t": 1}
        # The emulator is still serving.
        stored = await http.get(f"/emulator/devices/{iothub_device.device_id}/telemetry")
        assert [item["body"] for item in stored.json()] == [{"t": 1}]
    assert iothub_emulator.is_connected(iothub_device.device_id)


async def test_a_client_leaving_an_idle_stream_is_noticed_at_once(iothub_emulator: Emulator) -> None:
    # The keep-alive stays at its 15 s: the client's going must be seen without waiting for a write.
    request = (
        "GET /emulator/telemetry/stream?api-version=2021-04-12 HTTP/1.1\r\n"
        "Host: localhost\r\n"
        f"Authorization: {policy_token(iothub_emulator, 'service')}\r\n\r\n"
    ).encode()
    stream = await anyio.connect_tcp(
        "localhost",
        iothub_emulator.websocket_port or 0,
        tls=True,
        ssl_context=iothub_emulator.client_ssl_context(),
        tls_hostname="localhost",
    )
    try:
        await stream.send(request)
        received = b""
        with anyio.fail_after(5):
            while b": following telemetry" not in received:
                received += await stream.receive()
        assert received.startswith(b"HTTP/1.1 200 ")
        # Our close_notify; the emulator answers with its own only once it has ended the stream.
        with anyio.fail_after(5):
            await stream.unwrap()
    finally:
        await anyio.aclose_forcefully(stream)
    # And it goes on serving.
    async with service_client(iothub_emulator, "service") as http:
        assert (await http.get("/emulator/telemetry")).status_code == 200
