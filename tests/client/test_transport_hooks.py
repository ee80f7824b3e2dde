"""The aiomqtt/paho internals that aioiothub.transport relies on.

If aiomqtt changes underneath, these fail loudly and name what moved, instead of the client
misbehaving quietly (see the transport module docstring for why each hook is needed).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import ssl

import aiomqtt
import paho.mqtt.client as paho
import pytest

from aioiothub.transports.aiomqtt import SUPPORTED_AIOMQTT, MqttConnection
from aioiothub.transports.base import ConnectParameters

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
    parameters = ConnectParameters(
        host="localhost",
        port=8883,
        client_id="dev",
        username="localhost/dev/?api-version=2021-04-12",
        password="token",
        ssl_context=ssl.create_default_context(),
        keepalive=60,
        clean_session=False,
        websockets=False,
        max_in_flight=16,
        connect_timeout=5.0,
    )
    connection = MqttConnection(parameters, lambda message: None)
    inner = connection._client._client
    assert inner._manual_ack is True
    assert inner.on_message == connection._handle_message
    assert inner.on_publish == connection._handle_puback
    assert inner.on_disconnect == connection._handle_disconnect
    assert inner._max_inflight_messages == 16
