"""Reaching the hub another way: through an HTTP proxy, and through a gateway host name."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import aioiothub
from aioiothub import ProxyOptions
from aioiothub.emulator import Emulator
from tests.proxy_helpers import ConnectProxy, serve_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[ConnectProxy, int]]:
    recorder = ConnectProxy()
    async for port in serve_proxy(recorder):
        yield recorder, port


async def test_client_reaches_the_hub_through_an_http_proxy(proxy: tuple[ConnectProxy, int]) -> None:
    recorder, proxy_port = proxy
    async with Emulator(websocket_port=None) as hub:
        identity = hub.add_device("dev1")
        client = aioiothub.IoTHubDeviceClient.from_connection_string(
            identity.connection_string,
            port=hub.port,
            ssl_context=hub.client_ssl_context(),
            proxy=ProxyOptions("http", "127.0.0.1", proxy_port),
        )
        async with client:
            await client.send_message(b"via proxy")
            assert (await client.get_twin()).reported_version is not None
        assert [record.body for record in hub.telemetry("dev1")] == [b"via proxy"]
        assert recorder.targets == [f"localhost:{hub.port}"]


async def test_gateway_hostname_is_where_the_client_connects_while_the_username_names_the_hub() -> None:
    # The hub calls itself by an unresolvable name; the client reaches it through "localhost", as an
    # IoT Edge device reaches the cloud hub through its gateway.
    async with Emulator(hostname="myhub.azure-devices.net", websocket_port=None) as hub:
        identity = hub.add_device("dev1")
        assert "GatewayHostName" not in identity.connection_string
        client = aioiothub.IoTHubDeviceClient.from_connection_string(
            identity.connection_string + ";GatewayHostName=localhost",
            port=hub.port,
            ssl_context=hub.client_ssl_context(),
        )
        async with client:
            await client.send_message(b"via gateway")
        assert [record.body for record in hub.telemetry("dev1")] == [b"via gateway"]
