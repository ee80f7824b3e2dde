"""Tests for percent-encoding and property bags (protocol.md section 2)."""

from __future__ import annotations

import contextlib
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.properties import (
    SYSTEM_PROPERTY_KEYS,
    decode_property_bag,
    encode_property_bag,
    quote_component,
    unquote_component,
    validate_application_properties,
)

UNRESERVED = string.ascii_letters + string.digits + "-_.~"
ENCODED = re.compile(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})*")

property_bags = st.dictionaries(st.text(min_size=1), st.none() | st.text())
# Text dense in the characters that matter to the bag syntax, so malformed input is reached often.
bag_like_text = st.text(alphabet="%&=+aAfF09gG/ é\x00")


def lower_escapes(encoded: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda match: match.group().lower(), encoded)


def test_system_property_keys_are_the_documented_set() -> None:
    documented = {"$.mid", "$.cid", "$.uid", "$.ct", "$.ce", "$.exp", "$.ctime", "$.sub", "$.ifid", "$.on", "$.to"}
    assert documented | {"iothub-ack"} == SYSTEM_PROPERTY_KEYS
    assert isinstance(SYSTEM_PROPERTY_KEYS, frozenset)


def test_quote_keeps_unreserved_characters() -> None:
    assert quote_component(UNRESERVED) == UNRESERVED
    assert quote_component("") == ""


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("$.ct", "%24.ct"),
        ("application/json", "application%2Fjson"),
        ("a b", "a%20b"),
        ("a+b", "a%2Bb"),
        ("k=v&x", "k%3Dv%26x"),
        ("100%", "100%25"),
        ("#?*", "%23%3F%2A"),
        ("é", "%C3%A9"),
        ("€", "%E2%82%AC"),
        ("\U0001f600", "%F0%9F%98%80"),
        ("azsdk-c/1.6.0-beta.1", "azsdk-c%2F1.6.0-beta.1"),
        ("dtmi:YOUR_COMPANY_NAME_HERE:sample_device;1", "dtmi%3AYOUR_COMPANY_NAME_HERE%3Asample_device%3B1"),
    ],
)
def test_quote_and_unquote_vectors(text: str, encoded: str) -> None:
    assert quote_component(text) == encoded
    assert unquote_component(encoded) == text
    assert unquote_component(lower_escapes(encoded)) == text


def test_quote_rejects_non_text_naming_the_argument() -> None:
    with pytest.raises(TypeError, match=r"^request_id: expected str, got bytes"):
        quote_component(b"abc", argument="request_id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^text: "):
        quote_component(5)  # type: ignore[arg-type]


def test_quote_rejects_lone_surrogates() -> None:
    with pytest.raises(ValueError, match=r"^text: .*UTF-8"):
        quote_component("a\ud800")


def test_unquote_keeps_plus_and_unescaped_characters() -> None:
    assert unquote_component("a+b") == "a+b"
    assert unquote_component("a%2Bb%2bc") == "a+b+c"
    assert unquote_component("a b/é") == "a b/é"
    assert unquote_component("%C3%a9") == "é"


@pytest.mark.parametrize("text", ["%", "a%", "%2", "%zz", "%g0", "%+1", "% 1", "%1 ", "%-1", "%%41", "%\u0661\u0662"])
def test_unquote_rejects_malformed_escapes(text: str) -> None:
    with pytest.raises(ProtocolError, match=r"malformed percent-escape") as caught:
        unquote_component(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("text", ["%FF", "%C3", "%C3%28", "%ED%A0%80", "a%80b"])
def test_unquote_rejects_invalid_utf8(text: str) -> None:
    with pytest.raises(ProtocolError, match=r"not valid UTF-8") as caught:
        unquote_component(text)
    assert repr(text) in str(caught.value)


def test_encode_property_bag_null_versus_empty_and_order() -> None:
    assert encode_property_bag({}) == ""
    assert encode_property_bag({"flag": None}) == "flag"
    assert encode_property_bag({"empty": ""}) == "empty="
    assert encode_property_bag({"z": "1", "a": None, "m": ""}) == "z=1&a&m="
    assert encode_property_bag({"$.ct": "application/json", "$.ce": "utf-8"}) == (
        "%24.ct=application%2Fjson&%24.ce=utf-8"
    )
    assert encode_property_bag({"a+b": "c d"}) == "a%2Bb=c%20d"


def test_encode_property_bag_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"^properties: property names must not be empty"):
        encode_property_bag({"": "x"})
    with pytest.raises(TypeError, match=r"^properties: property names must be str, got int"):
        encode_property_bag({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"^properties\['k'\]: expected str or None, got int"):
        encode_property_bag({"k": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"^properties\['k'\]: not encodable as UTF-8"):
        encode_property_bag({"k": "\udc80"})


@pytest.mark.parametrize(
    ("bag", "expected"),
    [
        ("", {}),
        ("k", {"k": None}),
        ("k=", {"k": ""}),
        ("k=v", {"k": "v"}),
        ("a+b=c+d", {"a+b": "c+d"}),
        ("%24.mid=1&%24.CT=x", {"$.mid": "1", "$.CT": "x"}),
        ("%24.ct=application%2fjson", {"$.ct": "application/json"}),
        ("k=a=b", {"k": "a=b"}),
        ("k=1&k=2", {"k": "2"}),
        ("b=1&a=2", {"b": "1", "a": "2"}),
    ],
)
def test_decode_property_bag_vectors(bag: str, expected: dict[str, str | None]) -> None:
    decoded = decode_property_bag(bag)
    assert decoded == expected
    assert list(decoded) == list(expected)


@pytest.mark.parametrize("bag", ["=v", "&", "a&&b", "a&", "&a", "a=1&=2", "k=%zz", "%FF=1"])
def test_decode_property_bag_rejects_malformed_bags(bag: str) -> None:
    with pytest.raises(ProtocolError, match=r"malformed property bag") as caught:
        decode_property_bag(bag)
    assert repr(bag) in str(caught.value)


@given(property_bags)
def test_property_bag_round_trip(properties: dict[str, str | None]) -> None:
    encoded = encode_property_bag(properties)
    decoded = decode_property_bag(encoded)
    assert decoded == properties
    assert list(decoded) == list(properties)


@given(st.text())
def test_quote_output_is_unreserved_or_escaped_and_round_trips(text: str) -> None:
    encoded = quote_component(text)
    assert ENCODED.fullmatch(encoded)
    assert unquote_component(encoded) == text
    assert unquote_component(lower_escapes(encoded)) == text


@given(st.text() | bag_like_text)
def test_decoders_raise_only_protocol_error(text: str) -> None:
    for decoder in (unquote_component, decode_property_bag):
        with contextlib.suppress(ProtocolError):
            decoder(text)


def test_validate_application_properties_returns_a_copy() -> None:
    properties = {"alert": "1", "empty": ""}
    validated = validate_application_properties(properties)
    assert validated == {"alert": "1", "empty": ""}
    assert validated is not properties


@pytest.mark.parametrize(
    ("properties", "error", "message"),
    [
        ({"$.mid": "1"}, ValueError, r"properties\['\$\.mid'\] is a system property"),
        ({"iothub-ack": "full"}, ValueError, r"properties\['iothub-ack'\] is a system property"),
        ({"": "x"}, ValueError, "names must not be empty"),
        ({"n\u00e4me": "x"}, ValueError, "must be ASCII"),
        ({"k": "v\u00e4"}, ValueError, r"properties\['k'\] must be ASCII"),
        ({"k": 1}, TypeError, r"properties\['k'\] must be a str"),
        ({1: "v"}, TypeError, "names must be str"),
    ],
)
def test_validate_application_properties_names_the_bad_entry(
    properties: dict[object, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        validate_application_properties(properties)  # type: ignore[arg-type]


def test_validate_application_properties_rejects_a_non_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        validate_application_properties([("k", "v")])  # type: ignore[arg-type]
