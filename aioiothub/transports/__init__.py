"""Transports: one MQTT connection each, behind the :class:`~aioiothub.transports.base.Transport` seam.

* :mod:`.base` -- the seam itself: ``Transport``, ``ConnectParameters``, ``InboundPublish``.
* :mod:`.aiomqtt` -- aiomqtt over paho-mqtt (the default); the only module importing either.
* :mod:`.native` -- our own codec on an asyncio protocol, with TLS through ``ssl.MemoryBIO``
  (:mod:`.secure_channel`); no threads, no paho.
* :mod:`.session_connection` -- what both keep of a connection: its end, and the
  :class:`~aioiothub.protocol.mqtt.ClientSession` they drive.

:func:`transport_factory` maps the clients' ``transport=`` option to an implementation, importing
it only when asked for; :func:`validate_transport_options` tells a client at construction whether
the chosen transport can serve its other options.
"""

from __future__ import annotations

from aioiothub.transports.base import TransportFactory
from aioiothub.transports.options import (
    TRANSPORT_NAMES,
    TransportName,
    check_transport_name,
    validate_transport_options,
)

__all__ = ["TRANSPORT_NAMES", "TransportName", "transport_factory", "validate_transport_options"]


def transport_factory(name: str) -> TransportFactory:
    """The transport class for ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`TRANSPORT_NAMES`.
    """
    check_transport_name(name)
    if name == "native":
        from aioiothub.transports.native import NativeConnection

        return NativeConnection
    from aioiothub.transports.aiomqtt import MqttConnection

    return MqttConnection
