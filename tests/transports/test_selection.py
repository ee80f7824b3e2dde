"""Choosing a transport by name, and the options each one can serve."""

from __future__ import annotations

import importlib.util

import pytest

from aioiothub import ProxyOptions
from aioiothub.transports import TRANSPORT_NAMES, transport_factory, validate_transport_options
from aioiothub.transports.aiomqtt import MqttConnection
from aioiothub.transports.native import NativeConnection
from tests.transports.transport_helpers import offline_parameters

pytestmark = pytest.mark.anyio


def test_names_map_to_their_implementations() -> None:
    assert TRANSPORT_NAMES == ("aiomqtt", "native")
    assert transport_factory("aiomqtt") is MqttConnection
    assert transport_factory("native") is NativeConnection


@pytest.mark.parametrize("name", ["paho", "", "Native", None])
def test_unknown_name_is_refused_naming_the_choices(name: object) -> None:
    with pytest.raises(ValueError, match="transport must be one of 'aiomqtt', 'native'"):
        transport_factory(name)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transport must be one of 'aiomqtt', 'native'"):
        validate_transport_options(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", TRANSPORT_NAMES)
@pytest.mark.parametrize("websockets", [False, True])
def test_every_transport_serves_websockets_and_http_proxies(name: str, websockets: bool) -> None:
    validate_transport_options(name, websockets=websockets)
    validate_transport_options(name, websockets=websockets, proxy=ProxyOptions("http", "proxy.example", 3128))


@pytest.mark.parametrize("kind", ["socks4", "socks5"])
def test_socks_proxy_with_the_native_transport_names_the_option_and_the_transport_that_can(kind: str) -> None:
    proxy = ProxyOptions(kind, "proxy.example", 1080)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=f'^proxy: transport="native" reaches HTTP proxies only, not {kind}; use transport="aiomqtt"$'
    ):
        validate_transport_options("native", proxy=proxy)
    assert importlib.util.find_spec("socks") is not None  # the test extra installs PySocks
    validate_transport_options("aiomqtt", proxy=proxy)


def test_aiomqtt_proxy_without_pysocks_is_refused_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "socks" else real_find_spec(name))
    with pytest.raises(
        ValueError, match=r"^proxy: the aiomqtt transport needs the PySocks package .*transport=\"native\""
    ):
        validate_transport_options("aiomqtt", proxy=ProxyOptions("http", "proxy.example", 3128))
    validate_transport_options("native", proxy=ProxyOptions("http", "proxy.example", 3128))


def test_websockets_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="websockets must be True or False"):
        validate_transport_options("native", websockets=1)  # type: ignore[arg-type]


async def test_native_connection_refuses_a_socks_proxy_when_built() -> None:
    parameters = offline_parameters(proxy=ProxyOptions("socks5", "proxy.example", 1080))
    with pytest.raises(ValueError, match='use transport="aiomqtt"'):
        NativeConnection(parameters, lambda message: None)
