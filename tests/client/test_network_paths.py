"""Reaching the hub another way: through an HTTP proxy, and through a gateway host name."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

import aioiothub
from aioiothub import ProxyOptions
from aioiothub.emulator import Emulator

pytestmark = pytest.mark.anyio


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on loopback that records the targets it was asked for."""

    def __init__(self) -> None:
        self.targets: list[str] = []

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await client.receive()
            method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
            assert method == "CONNECT"
            self.targets.append(target)
            _host, port = target.rsplit(":", 1)
            async with await anyio.connect_tcp("127.0.0.1", int(port)) as upstream:
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
                async with anyio.create_task_group() as pumps:
                    pumps.start_soon(self._pump, client, upstream, pumps.cancel_scope)
                    pumps.start_soon(self._pump, upstream, client, pumps.cancel_scope)

    @staticmethod
    async def _pump(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        scope.cancel()


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[ConnectProxy, int]]:
    recorder = ConnectProxy()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, recorder.handle)
        yield recorder, port
        tasks.cancel_scope.cancel()


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
