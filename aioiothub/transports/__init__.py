"""Transports: one MQTT connection each, behind the :class:`~aioiothub.transports.base.Transport` seam.

* :mod:`.base` -- the seam itself: ``Transport``, ``ConnectParameters``, ``InboundPublish``.
* :mod:`.aiomqtt` -- aiomqtt over paho-mqtt (the default); the only module importing either.

:func:`transport_factory` maps the clients' ``transport=`` option to an implementation, importing
it only when asked for.
"""

from __future__ import annotations

from typing import Literal, get_args

from aioiothub.transports.base import TransportFactory

__all__ = ["TRANSPORT_NAMES", "TransportName", "transport_factory"]

TransportName = Literal["aiomqtt"]
"""The values of the clients' ``transport=`` option."""

TRANSPORT_NAMES: tuple[str, ...] = get_args(TransportName)


def transport_factory(name: str) -> TransportFactory:
    """The transport class for ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`TRANSPORT_NAMES`.
    """
    if name == "aiomqtt":
        from aioiothub.transports.aiomqtt import MqttConnection

        return MqttConnection
    raise ValueError(f"transport must be one of {', '.join(map(repr, TRANSPORT_NAMES))}, not {name!r}")
