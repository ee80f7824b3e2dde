"""What a telemetry topic says, decoded once per distinct topic, and once per message id at most.

Theory of operation
-------------------
Devices reuse a handful of topics, so :class:`TopicCache` keeps what each one says (identity,
system and application properties, their share of the size limit) by topic text. One property
defeats that: a message id (``$.mid``) is usually new in every message, which makes every topic
new. Such a topic is looked up with the id's value cut out (``…&%24.mid=&…``, the id left empty),
so that the messages of one device share one entry; the id is decoded on its own and put back
into the system properties at its place. This is exact: the bag with the empty id parses exactly
when the original does (the id's own escapes are checked when it is decoded), and a later field
that could also decode to ``$.mid`` (and would win, as the last value of a repeated name does)
sends the topic down the ordinary path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.limits import message_wire_size
from aioiothub.protocol.properties import SYSTEM_PROPERTY_KEYS, quote_component, unquote_component
from aioiothub.protocol.topics import parse_telemetry_topic

__all__ = ["TopicCache", "TopicInfo"]

_EMPTY: Final[Mapping[str, str | None]] = MappingProxyType({})
_MESSAGE_ID: Final = "$.mid"
# The two spellings of the name devices send: quoted (every official SDK, and this library) and bare.
_MESSAGE_ID_FIELDS: Final = (f"{quote_component(_MESSAGE_ID)}=", f"{_MESSAGE_ID}=")
_BAG_START: Final = "/messages/events/"
# Distinct (id-less) topics remembered; the cache starts again when it is full.
_CACHE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """What one telemetry topic says.

    Attributes:
        device_id: the publishing device.
        module_id: the publishing module, or ``None``.
        system: the system properties under their wire names.
        application: the application properties.
        properties_size: the properties' share of the size IoT Hub counts against the 256 KiB limit.
    """

    device_id: str
    module_id: str | None
    system: Mapping[str, str | None]
    application: Mapping[str, str | None]
    properties_size: int

    @classmethod
    def parse(cls, topic: str) -> TopicInfo:
        """Decode ``topic``.

        Raises:
            ProtocolError: the topic is not a telemetry topic or its property bag is malformed.
        """
        parsed = parse_telemetry_topic(topic)
        system = {name: value for name, value in parsed.properties.items() if name in SYSTEM_PROPERTY_KEYS}
        application = {name: value for name, value in parsed.properties.items() if name not in SYSTEM_PROPERTY_KEYS}
        return cls(
            parsed.device_id,
            parsed.module_id,
            MappingProxyType(system) if system else _EMPTY,
            MappingProxyType(application) if application else _EMPTY,
            message_wire_size(b"", parsed.properties),
        )


def _cut_message_id(topic: str) -> tuple[str, str] | None:
    """``(topic with the message id's value cut out, the value as sent)``, or ``None`` when that would not be exact."""
    bag = topic.find(_BAG_START)  # ids cannot hold a "/", so the first one ends the identity
    if bag < 0:
        return None
    bag += len(_BAG_START)
    for field in _MESSAGE_ID_FIELDS:
        start = topic.find(field, bag)
        if start >= 0:
            break
    else:
        return None
    if start != bag and topic[start - 1] != "&":
        return None  # inside another field's value
    value_start = start + len(field)
    value_end = topic.find("&", value_start)
    if value_end < 0:
        value_end = len(topic) - 1 if topic.endswith("/") else len(topic)
    elif "mid" in topic[value_end:] or "%6" in topic[value_end:]:
        return None  # a later name might decode to "$.mid" too (an escaped m, i or d starts with %6)
    return topic[:value_start] + topic[value_end:], topic[value_start:value_end]


class TopicCache:
    """Decoded telemetry topics by topic text; see the module docstring.

    Example:
        >>> cache = TopicCache()
        >>> info, system, size = cache.lookup("devices/d1/messages/events/%24.mid=42&%24.ct=application%2Fjson")
        >>> info.device_id, dict(system), size
        ('d1', {'$.mid': '42', '$.ct': 'application/json'}, 18)
    """

    def __init__(self) -> None:
        self._topics: dict[str, TopicInfo] = {}

    def lookup(self, topic: str) -> tuple[TopicInfo, Mapping[str, str | None], int]:
        """``(what the topic says, its system properties, the properties' size)``.

        The last two are ``info.system`` and ``info.properties_size`` but for the message id, when
        it was cut out.

        Raises:
            ProtocolError: the topic is not a telemetry topic or its property bag is malformed.
        """
        info = self._topics.get(topic)
        if info is not None:
            return info, info.system, info.properties_size
        cut = _cut_message_id(topic)
        if cut is not None:
            key, raw_id = cut
            try:
                message_id = unquote_component(raw_id)
                info = self._entry(key)
            except ProtocolError:
                info = None  # the ordinary path raises the error the whole topic deserves
            if info is not None:
                cut_out = {_MESSAGE_ID: message_id}
                system = MappingProxyType({**info.system, **cut_out})
                return info, system, info.properties_size + message_wire_size(b"", cut_out)
        info = self._entry(topic)
        return info, info.system, info.properties_size

    def _entry(self, topic: str) -> TopicInfo:
        info = self._topics.get(topic)
        if info is None:
            info = TopicInfo.parse(topic)
            if len(self._topics) >= _CACHE_SIZE:
                self._topics.clear()
            self._topics[topic] = info
        return info
