"""An unexpected error in one of the emulator's handlers ends only that request or connection.

For each kind of handler -- a device's MQTT connection, a DPS MQTT connection, the device REST
routes, the service REST API, the telemetry stream, the blob endpoint and the port-443 connection
handler under all the HTTPS routes -- a failure is injected
into one request or connection: it is answered 500 (HTTP) or closed (MQTT), logged once with no
secret in the log, the next request or connection is served as usual, and leaving ``async with
Emulator()`` raises nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

from aioiothub.emulator import Emulator
from aioiothub.emulator.mqtt.dps import DpsHandler as DpsConnection
from aioiothub.emulator.rest import surface as https_surface
from aioiothub.emulator.rest.https import HttpRequest, HttpResponse, Router
from aioiothub.protocol.connect import dps_username
from aioiothub.protocol.mqtt import encode_publish
from aioiothub.protocol.topics import DPS_RESPONSE_SUBSCRIPTION
from tests.emulator.emulator_helpers import STEP, raw_client, raw_connection, sas_password
from tests.emulator.test_emulator_dps import REGISTER, dps_token
from tests.service.service_helpers import policy_token

pytestmark = pytest.mark.anyio


class Injected(Exception):
    """The failure the tests inject: a bug in a handler."""


def fail_once(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, except that its first call raises :class:`Injected`."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Injected("injected failure")
        return function(*args, **kwargs)

    return wrapper


def break_route(router: Router, method: str, pattern: str, *, streaming: bool = False) -> None:
    """Make the first request to ``method pattern`` fail in its handler (or, ``streaming``, midway
    through the stream it answers with); later requests reach the real handler."""
    segments = tuple(pattern[1:].split("/"))
    index = next(
        i for i, route in enumerate(router._routes) if (route.method, route.segments) == (method, segments)
    )
    original = router._routes[index]
    failed = False

    async def stream_then_fail() -> AsyncIterator[bytes]:
        yield b": following telemetry\n\n"
        raise Injected("injected failure")

    async def handler(request: HttpRequest) -> HttpResponse:
        nonlocal failed
        if failed:
            return await original.handler(request)
        failed = True
        if streaming:
            return HttpResponse(200, headers=(("Content-Type", "text/event-stream"),), stream=stream_then_fail())
        raise Injected("injected failure")

    router._routes[index] = dataclasses.replace(original, handler=handler)


def assert_logged_once(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is Injected
    for secret in secrets:
        assert secret not in caplog.text


@pytest.fixture
async def hub(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Emulator]:
    caplog.set_level(logging.INFO, logger="aioiothub")
    # Leaving the block must not raise whatever a handler did: the fixture's teardown checks it.
    async with Emulator() as emulator:
        yield emulator


def https_client(hub: Emulator, port: int | None, authorization: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"https://localhost:{port}",
        verify=hub.client_ssl_context(),
        headers={"Authorization": authorization},
        params={"api-version": "2021-04-12"},
        timeout=STEP,
    )


async def test_a_failing_device_connection_is_closed_and_the_next_one_served(
    hub: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    device = hub.add_device("dev1")
    password = sas_password(hub, device)
    monkeypatch.setattr(hub.core, "admit", fail_once(hub.core.admit))
    async with raw_connection(hub) as client:
        with pytest.raises(anyio.EndOfStream):
            await client.connect("dev1", f"{hub.hostname}/dev1/?api-version=2021-04-12", password)
    async with raw_client(hub, device) as client:
        await client.send(encode_publish("devices/dev1/messages/events/", b'{"t":1}', 0))
        await hub.wait_for_telemetry(1, "dev1", timeout=STEP)
    assert_logged_once(caplog, password, device.primary_key or "")


async def test_a_failing_dps_connection_is_closed_and_the_next_one_served(
    hub: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = hub.dps.add_enrollment("dev1").primary_key
    assert key is not None
    token = dps_token(hub, "dev1", key)
    original = DpsConnection._answer
    calls = 0

    async def answer(self: DpsConnection, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Injected("injected failure")
        return await original(self, *args)

    monkeypatch.setattr(DpsConnection, "_answer", answer)
    body = b'{"registrationId":"dev1","payload":null}'
    for attempt in range(2):
        async with raw_connection(hub) as client:
            assert (await client.connect("dev1", dps_username(hub.dps.id_scope, "dev1"), token)).return_code == 0
            assert (await client.subscribe(1, [(DPS_RESPONSE_SUBSCRIPTION, 1)])).granted == (1,)
            await client.send(encode_publish(REGISTER.format(rid="r1"), body, 0))
            if attempt == 0:
                with pytest.raises(anyio.EndOfStream):
                    await client.next_publish()
            else:
                answer_packet = await client.next_publish()
                assert json.loads(answer_packet.payload)["status"] == "assigning"
    assert_logged_once(caplog, token, key)


@pytest.mark.parametrize(
    ("method", "pattern", "path", "authorization"),
    [
        ("POST", "/devices/{device_id}/files", "/devices/dev1/files", "device"),
        ("GET", "/devices/{device_id}", "/devices/dev1", "service"),
    ],
    ids=["device-rest", "service-rest"],
)
async def test_a_failing_rest_request_is_answered_500_and_the_next_one_served(
    hub: Emulator, caplog: pytest.LogCaptureFixture, method: str, pattern: str, path: str, authorization: str
) -> None:
    device = hub.add_device("dev1")
    token = sas_password(hub, device) if authorization == "device" else policy_token(hub)
    break_route(hub._https.router, method, pattern)
    body = {"blobName": "report.txt"} if method == "POST" else None
    async with https_client(hub, hub.websocket_port, token) as http:
        failed = await http.request(method, path, json=body)
        assert failed.status_code == 500
        served = await http.request(method, path, json=body)
        assert served.status_code == 200, served.text
    assert_logged_once(caplog, token)


async def test_a_telemetry_stream_failing_midway_ends_that_connection_only(
    hub: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    token = policy_token(hub, "service")
    break_route(hub._https.router, "GET", "/emulator/telemetry/stream", streaming=True)
    async with https_client(hub, hub.websocket_port, token) as http:
        async with http.stream("GET", "/emulator/telemetry/stream") as stream:
            with pytest.raises(httpx.RemoteProtocolError):
                await stream.aread()  # the connection ends before the stream does
        async with http.stream("GET", "/emulator/telemetry/stream") as stream:
            with anyio.fail_after(STEP):
                assert await anext(stream.aiter_lines()) == ": following telemetry"
        assert (await http.get("/emulator/telemetry")).status_code == 200
    assert_logged_once(caplog, token)


async def test_a_failing_blob_request_is_answered_500_and_the_next_one_served(
    hub: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    assert hub.blob_store is not None
    break_route(hub.blob_store.router, "GET", "/{container}/{blob:path}")
    async with https_client(hub, hub.blob_port, "") as http:
        assert (await http.get("/fileuploads/dev1/report.txt")).status_code == 500
        # The real handler: no SAS, so Azure Storage's refusal.
        refused = await http.get("/fileuploads/dev1/report.txt")
        assert refused.status_code == 403
        assert refused.headers["x-ms-error-code"] == "AuthenticationFailed"
    assert_logged_once(caplog)


async def test_a_failing_https_connection_handler_ends_that_connection_only(
    hub: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = https_surface.serve_http
    calls = 0

    async def serve_http(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Injected("injected failure")
        return await original(*args)

    monkeypatch.setattr(https_surface, "serve_http", serve_http)
    token = policy_token(hub)
    async with https_client(hub, hub.websocket_port, token) as http:
        with pytest.raises(httpx.TransportError):
            await http.get("/devices")
        assert (await http.get("/devices")).status_code == 200
    assert_logged_once(caplog, token)
