"""Sans-IO MQTT 3.1.1 codec for both roles: packets as frozen dataclasses, bytes in, bytes out.

The codec is split by job: :mod:`.packets` holds the packet dataclasses, limits and
:class:`MalformedPacket`; :mod:`.framing` the buffering and fixed-header loop both directions share
(its docstring tells how a byte stream is cut into packets); :mod:`.parsers` the two incremental
parsers, :class:`MqttServerCodec` for what a client sends and :class:`MqttClientCodec` for what a
server sends; :mod:`.encoders` the ``encode_*`` functions that build packets for either direction.
Above the codec, :mod:`.client_session` is the client role's state machine (packet ids, what is in
flight, CONNACK and SUBACK, keep-alive, the QoS and acknowledgement rules) that both transports
drive, with its events in :mod:`.client_events`. Every public name is importable from this package.
"""

from __future__ import annotations

# Each module lists its public names once, in its own __all__; this package offers all of them.
from aioiothub.protocol.mqtt import client_events, client_session, encoders, packets, parsers
from aioiothub.protocol.mqtt.client_events import *
from aioiothub.protocol.mqtt.client_session import *
from aioiothub.protocol.mqtt.encoders import *
from aioiothub.protocol.mqtt.packets import *
from aioiothub.protocol.mqtt.parsers import *

__all__: list[str] = []
__all__ += client_events.__all__
__all__ += client_session.__all__
__all__ += encoders.__all__
__all__ += packets.__all__
__all__ += parsers.__all__
