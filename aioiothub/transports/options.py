"""Which transports there are, and whether the chosen one can serve a client's other options.

Kept apart from :func:`aioiothub.transports.transport_factory` (which imports the transports) so
that the transports themselves can check their options without importing the package's front.
"""

from __future__ import annotations

import importlib.util
from typing import Literal, get_args

from aioiothub.options import ProxyOptions

__all__ = ["TRANSPORT_NAMES", "TransportName", "check_transport_name", "validate_transport_options"]

TransportName = Literal["aiomqtt", "native"]
"""The values of the clients' ``transport=`` option."""

TRANSPORT_NAMES: tuple[str, ...] = get_args(TransportName)


def check_transport_name(name: object) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`TRANSPORT_NAMES`."""
    if name not in TRANSPORT_NAMES:
        raise ValueError(f"transport must be one of {', '.join(map(repr, TRANSPORT_NAMES))}, not {name!r}")


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
    check_transport_name(name)
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
