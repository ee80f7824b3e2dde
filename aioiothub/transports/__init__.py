"""Transports: one MQTT connection each, behind the :class:`~aioiothub.transports.base.Transport` seam.

* :mod:`.base` -- the seam itself: ``Transport``, ``ConnectParameters``, ``InboundPublish``.
* :mod:`.aiomqtt` -- aiomqtt over paho-mqtt (the default); the only module importing either.
* :mod:`.native` -- our own codec on an asyncio protocol, with TLS through ``ssl.MemoryBIO``
  (:mod:`.secure_channel`); no threads, no paho.

:func:`transport_factory` maps the clients' ``transport=`` option to an implementation, importing
it only when asked for; :func:`validate_transport_options` tells a client at construction whether
the chosen transport can serve its other options.
"""

from __future__ import annotations

import importlib.util
from typing import Literal, get_args

from aioiothub.options import ProxyOptions
from aioiothub.transports.base import TransportFactory

__all__ = ["TRANSPORT_NAMES", "TransportName", "transport_factory", "validate_transport_options"]

TransportName = Literal["aiomqtt", "native"]
"""The values of the clients' ``transport=`` option."""

TRANSPORT_NAMES: tuple[str, ...] = get_args(TransportName)


def _check_name(name: object) -> None:
    if name not in TRANSPORT_NAMES:
        raise ValueError(f"transport must be one of {', '.join(map(repr, TRANSPORT_NAMES))}, not {name!r}")


def transport_factory(name: str) -> TransportFactory:
    """The transport class for ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`TRANSPORT_NAMES`.
    """
    _check_name(name)
    if name == "native":
        from aioiothub.transports.native import NativeConnection

        return NativeConnection
    from aioiothub.transports.aiomqtt import MqttConnection

    return MqttConnection


def validate_transport_options(name: str, *, proxy: ProxyOptions | None = None, websockets: bool = False) -> None:
    """Check, when a client is built, that transport ``name`` can serve the other options.

    Example:
        >>> validate_transport_options("native", proxy=ProxyOptions("http", "proxy.example.com", 3128))
        >>> validate_transport_options("native", proxy=ProxyOptions("socks5", "proxy.example.com", 1080))
        Traceback (most recent call last):
        ...
        ValueError: proxy: transport="native" reaches HTTP proxies only, not socks5; use transport="aiomqtt"

    Raises:
        ValueError: ``name`` is unknown, or an option needs another transport (the message names
            the option and the transport that can serve it) or a missing package.
    """
    _check_name(name)
    if not isinstance(websockets, bool):
        raise TypeError("websockets must be True or False")
    if proxy is None:
        return
    if name == "native" and proxy.proxy_type != "http":
        raise ValueError(
            f'proxy: transport="native" reaches HTTP proxies only, not {proxy.proxy_type}; use transport="aiomqtt"'
        )
    if name == "aiomqtt" and importlib.util.find_spec("socks") is None:
        raise ValueError(
            "proxy: the aiomqtt transport needs the PySocks package (pip install 'aioiothub[proxy]')"
            + ('; transport="native" reaches HTTP proxies without it' if proxy.proxy_type == "http" else "")
        )
