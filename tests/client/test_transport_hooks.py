"""The aiomqtt/paho internals that aioiothub.transport relies on.

If aiomqtt changes underneath, these fail loudly and name what moved, instead of the client
misbehaving quietly (see the transport module docstring for why each hook is needed).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import inspect
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import anyio
import paho.mqtt.client as paho
import pytest

from aioiothub import ConnectError, ConnectionLostError
from aioiothub.transports.aiomqtt import SUPPORTED_AIOMQTT, MqttConnection
from tests.transports.transport_helpers import STEP, offline_parameters, raw_server

pytestmark = pytest.mark.anyio


def test_installed_aiomqtt_is_in_the_supported_range() -> None:
    version = tuple(int(part) for part in importlib.metadata.version("aiomqtt").split(".")[:2])
    low, high = SUPPORTED_AIOMQTT
    assert low <= version < high, f"aiomqtt {version} is outside the range the transport hooks support"


async def test_aiomqtt_client_wraps_a_paho_client_with_the_hooks_we_use() -> None:
    client = aiomqtt.Client("localhost", 8883)
    inner = client._client
    assert isinstance(inner, paho.Client)
    for name in (
        "manual_ack_set",
        "ack",
        "publish",
        "socket",
        "_sock_close",
        "_send_pingreq",
        "_handle_pingresp",
        "_create_socket",
        "_ssl_wrap_socket",
    ):
        assert callable(getattr(inner, name, None)), f"paho.Client.{name} is gone"
    assert list(inspect.signature(inner.ack).parameters) == ["mid", "qos"]
    assert list(inspect.signature(inner._ssl_wrap_socket).parameters) == ["tcp_sock"]
    assert isinstance(client._disconnected, asyncio.Future)
    # aiomqtt installs its own on_disconnect, which the transport chains to.
    assert inner.on_disconnect is not None


async def test_connection_installs_manual_ack_and_its_own_callbacks() -> None:
    connection = MqttConnection(offline_parameters(max_in_flight=16), lambda message: None)
    inner = connection._client._client
    assert inner._manual_ack is True
    assert inner.on_message == connection._handle_message
    assert inner.on_publish == connection._handle_puback
    assert inner.on_disconnect == connection._handle_disconnect
    assert inner._max_inflight_messages == 16


async def test_a_drop_right_after_connack_is_a_loss_and_leaves_no_unread_future() -> None:
    # aiomqtt replaces its disconnected future when it completed while connecting (a hub that
    # drops the device right after accepting it). The replaced one's exception must still be read
    # (asyncio logs "Future exception was never retrieved" otherwise) and the drop must still count
    # as the connection's loss.
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        async with raw_server() as server, anyio.create_task_group() as tasks:

            async def accept_then_hang_up() -> None:
                while True:
                    peer = await server.peer()
                    await peer.packet()  # CONNECT
                    await peer.send(b"\x20\x02\x00\x00")  # CONNACK 0: accepted
                    peer.writer.transport.abort()

            tasks.start_soon(accept_then_hang_up)
            for _ in range(3):
                connection = MqttConnection(server.parameters(), lambda message: None)
                # paho connects in a worker thread; holding that thread back after the CONNECT went
                # out lets the CONNACK and the hang-up both arrive before aiomqtt's connect returns.
                connect = connection._client._client_connect

                def connect_then_stall(connect: Callable[[], None] = connect) -> None:
                    connect()
                    time.sleep(0.3)

                connection._client._client_connect = connect_then_stall  # type: ignore[method-assign]
                with anyio.fail_after(STEP * 2):
                    try:
                        async with connection:
                            with pytest.raises(ConnectionLostError):
                                await connection.lost
                    except ConnectError:
                        pass  # the hang-up overtook the CONNACK: refused, which is fine too
                assert connection.lost.done()
                del connection
                gc.collect()
            tasks.cancel_scope.cancel()
    finally:
        loop.set_exception_handler(None)
    assert unhandled == []
