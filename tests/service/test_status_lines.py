"""Every status line the emulator writes carries the standard reason phrase (``HTTP/1.1 404 Not Found``).

azure-iot-hub's HTTP stack reports a status line with an empty phrase as "invalid status code ''".
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from aioiothub.emulator import Emulator
from tests.service.service_helpers import service_client

pytestmark = pytest.mark.anyio


async def status_line(hub: Emulator, port: int | None, request: bytes) -> bytes:
    """Send ``request`` as it is over TLS and return the first line of the answer."""
    stream = await anyio.connect_tcp(
        "localhost", port or 0, tls=True, ssl_context=hub.client_ssl_context(), tls_hostname="localhost"
    )
    received = b""
    try:
        await stream.send(request)
        with anyio.fail_after(5):
            while b"\r\n" not in received:
                received += await stream.receive()
    finally:
        await anyio.aclose_forcefully(stream)
    return received.partition(b"\r\n")[0]


async def test_service_api_answers_carry_reason_phrases(iothub_emulator: Emulator) -> None:
    iothub_emulator.add_device("dev1")
    async with service_client(iothub_emulator) as http:
        found = await http.get("/devices/dev1")
        missing = await http.get("/devices/nobody")
        wrong_method = await http.post("/statistics/devices")
        async with http.stream("GET", "/emulator/telemetry/stream") as stream:
            streaming = stream.reason_phrase
    async with service_client(iothub_emulator, token="SharedAccessSignature sr=x&sig=y&se=1&skn=z") as http:
        refused = await http.get("/devices/dev1")
    assert (found.status_code, found.reason_phrase) == (200, "OK")
    assert (missing.status_code, missing.reason_phrase) == (404, "Not Found")
    assert (wrong_method.status_code, wrong_method.reason_phrase) == (405, "Method Not Allowed")
    assert streaming == "OK"
    assert (refused.status_code, refused.reason_phrase) == (401, "Unauthorized")


async def test_the_blob_endpoint_answers_carry_reason_phrases(iothub_emulator: Emulator) -> None:
    async with httpx.AsyncClient(verify=iothub_emulator.client_ssl_context()) as http:
        refused = await http.get(f"https://localhost:{iothub_emulator.blob_port}/fileuploads/dev1/x.txt")
    assert (refused.status_code, refused.reason_phrase) == (403, "Forbidden")


async def test_a_malformed_request_is_answered_with_a_reason_phrase(iothub_emulator: Emulator) -> None:
    line = await status_line(iothub_emulator, iothub_emulator.websocket_port, b"GET / HTTP/1.1\r\n\r\n")
    assert line == b"HTTP/1.1 400 Bad Request"


@pytest.mark.parametrize(
    ("path", "subprotocol", "expected"),
    [
        ("/elsewhere", "mqtt", b"HTTP/1.1 404 Not Found"),
        ("/$iothub/websocket", "chat", b"HTTP/1.1 400 Bad Request"),
    ],
    ids=["unknown-path", "no-mqtt-subprotocol"],
)
async def test_refused_websocket_upgrades_carry_reason_phrases(
    iothub_emulator: Emulator, path: str, subprotocol: str, expected: bytes
) -> None:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    ).encode()
    assert await status_line(iothub_emulator, iothub_emulator.websocket_port, request) == expected
