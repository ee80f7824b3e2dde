"""The emulator's telemetry topic cache: every lookup says what a full parse of the topic says."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioiothub.emulator.hub.telemetry_topics import TopicCache, TopicInfo
from aioiothub.exceptions import ProtocolError

PREFIX = "devices/dev1/messages/events/"


def outcome(topic: str, lookup: object) -> object:
    """What ``lookup(topic)`` gives, as plain values, or the error's type."""
    try:
        info, system, size = lookup(topic)  # type: ignore[operator]
    except ProtocolError:
        return ProtocolError
    return info.device_id, info.module_id, list(system.items()), dict(info.application), size


def parsed(topic: str) -> tuple[TopicInfo, object, int]:
    info = TopicInfo.parse(topic)
    return info, info.system, info.properties_size


def test_a_fresh_message_id_in_every_topic_shares_one_entry() -> None:
    cache = TopicCache()
    for number in range(3):
        topic = f"{PREFIX}%24.mid=m{number}&%24.ct=application%2Fjson&alert=1"
        info, system, size = cache.lookup(topic)
        assert dict(system) == {"$.mid": f"m{number}", "$.ct": "application/json"}
        assert dict(info.application) == {"alert": "1"}
        assert size == len(f"m{number}") + len("application/json") + len("alert") + len("1")
    assert list(cache._topics) == [f"{PREFIX}%24.mid=&%24.ct=application%2Fjson&alert=1"]


@pytest.mark.parametrize(
    "topic",
    [
        f"{PREFIX}%24.mid=abc",
        f"{PREFIX}$.mid=abc",
        f"{PREFIX}%24.mid=abc/",
        f"{PREFIX}%24.mid=abc//",
        f"{PREFIX}a=1&%24.mid=abc",
        f"{PREFIX}%24.mid=a%2Fb&a=1",
        f"{PREFIX}%24.mid=%C3%A9",
        f"{PREFIX}%24.mid",  # no value: None, as the full parse says
        f"{PREFIX}%24.mid=1&%24.mid=2",  # the last wins
        f"{PREFIX}$.mid=1&%24.mid=2",
        f"{PREFIX}%24.mid=1&$.mid=2",
        f"{PREFIX}%24.mid=1&%24.%6Did=2",  # an escaped name that decodes to $.mid
        f"{PREFIX}%24.%6Did=1&%24.mid=2",
        f"{PREFIX}x=%24.mid=1",  # inside another field's value
        f"{PREFIX}&%24.mid=1",  # an empty field: malformed
        f"{PREFIX}%24.mid=1&",
        f"{PREFIX}%24.mid=%zz",  # a malformed escape in the id
        f"{PREFIX}%24.mid=%C3",  # not UTF-8
        "devices/%24.mid=/messages/events/a=1",  # the name in the device id
        "devices/dev1/modules/m1/messages/events/%24.mid=abc&%24.ct=text%2Fplain",
        "devices/dev1/messages/devicebound/%24.mid=abc",  # not a telemetry topic
    ],
)
def test_the_cache_agrees_with_a_full_parse(topic: str) -> None:
    cache = TopicCache()
    assert outcome(topic, cache.lookup) == outcome(topic, parsed)
    assert outcome(topic, cache.lookup) == outcome(topic, parsed)  # and again, from the cache


fields = st.sampled_from(
    ["%24.mid=", "$.mid=", "%24.mid", "%24.%6Did=", "%24.ct=", "a=", "mid=", "&", "%", "%2", "%6", "/", "x", "1", "é"]
)


@settings(max_examples=400)
@given(st.lists(st.lists(fields, max_size=6).map("".join), max_size=5))
def test_generated_bags_agree_with_a_full_parse(pieces: list[str]) -> None:
    cache = TopicCache()
    for piece in pieces:
        topic = PREFIX + piece
        assert outcome(topic, cache.lookup) == outcome(topic, parsed), topic
