"""Events encoded for partition readers: an exact vector, proton's ``Message`` bytes, every field read back."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st
from proton import Message

from aioiothub.emulator.amqp.event_encoding import encode_event
from aioiothub.emulator.amqp.messages import event_message
from aioiothub.emulator.hub.event_log import Event, MessageSource
from aioiothub.emulator.hub.telemetry import TelemetryRecord

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=datetime.UTC)
T0_MS = "0000019b796dd6fa"  # 1767268800250 ms since the epoch, as a timestamp's 8 bytes


def _event(
    body: bytes = b'{"t":1}',
    *,
    device: str = "dev1",
    module: str | None = None,
    properties: Mapping[str, str | None] | None = None,
    system: Mapping[str, str | None] | None = None,
    sequence: int = 5,
    offset: int = 300,
    source: MessageSource = "Telemetry",
) -> Event:
    record = TelemetryRecord(device, module, body, properties or {}, system or {}, T0)
    return Event(sequence, offset, T0, record, source)


def _by_proton(event: Event, generation_id: str = "638000", authentication: str = "sas") -> bytes:
    return bytes(event_message(event, generation_id=generation_id, authentication=authentication).encode())


def _symbol(text: str) -> str:
    return f"a3{len(text):02x}" + text.encode().hex()


def _string(text: str) -> str:
    return f"a1{len(text.encode()):02x}" + text.encode().hex()


AUTH_DEVICE_SAS = '{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}'
_ANNOTATIONS = (
    _symbol("x-opt-sequence-number") + "5505"  # smalllong 5
    + _symbol("x-opt-offset") + _string("300")
    + _symbol("x-opt-enqueued-time") + "83" + T0_MS
    + _symbol("iothub-connection-device-id") + _string("dev1")
    + _symbol("iothub-enqueuedtime") + "83" + T0_MS
    + _symbol("iothub-message-source") + _string("Telemetry")
    + _symbol("iothub-connection-auth-method") + _string(AUTH_DEVICE_SAS)
    + _symbol("iothub-connection-auth-generation-id") + _string("638000")
)
_PROPERTIES = _string("m1") + "40" * 4 + _string("c1") + _symbol("application/json") + _symbol("utf-8")
_APPLICATION = _string("alert") + _string("1")

# A device's telemetry with message id, correlation id, content type and encoding and one
# application property, section by section.
DEVICE_MESSAGE = bytes.fromhex(
    "00537045"  # header: an empty list
    + "005372d1" + f"{len(_ANNOTATIONS) // 2 + 4:08x}" + "00000010" + _ANNOTATIONS  # map32, 16 items
    + "005373c0" + f"{len(_PROPERTIES) // 2 + 1:02x}" + "08" + _PROPERTIES  # list8, 8 fields
    + "005374d1" + f"{len(_APPLICATION) // 2 + 4:08x}" + "00000002" + _APPLICATION  # map32, 2 items
    + "005375" + "a007" + b'{"t":1}'.hex()  # data: vbin8
)


def _device_message() -> Event:
    return _event(
        properties={"alert": "1", "unset": None},
        system={"$.mid": "m1", "$.cid": "c1", "$.ct": "application/json", "$.ce": "utf-8"},
    )


def test_a_device_message_is_the_vector() -> None:
    assert encode_event(_device_message(), generation_id="638000", authentication="sas") == DEVICE_MESSAGE


def test_the_vector_is_what_proton_writes() -> None:
    assert _by_proton(_device_message()) == DEVICE_MESSAGE


def test_an_event_without_properties_has_an_empty_list_and_an_empty_map() -> None:
    encoded = encode_event(_event(), generation_id="638000", authentication="sas")
    assert encoded.endswith(bytes.fromhex("00537345" "005374d10000000400000000" "005375a007") + b'{"t":1}')
    assert encoded == _by_proton(_event())


def test_large_values_take_their_32_bit_forms() -> None:
    event = _event(
        b"x" * 300,
        properties={"p" * 300: "v" * 70_000},
        system={"$.mid": "m" * 300, "$.uid": "u" * 256},
        sequence=2**40,
        offset=2**50,
    )
    encoded = encode_event(event, generation_id="g", authentication="sas")
    assert encoded == _by_proton(event, "g")
    assert bytes.fromhex("005375b000000" + "12c") + b"x" * 300 == encoded[-308:]  # vbin32 body
    assert b"\x81" + (2**40).to_bytes(8, "big") in encoded  # long, not smalllong


def test_a_module_and_a_notification_carry_what_event_message_does() -> None:
    module = _event(module="mod/1")
    notification = _event(source="twinChangeEvents", module="m")
    lifecycle = _event(source="deviceLifecycleEvents")
    for event in (module, notification, lifecycle):
        assert encode_event(event, generation_id="638", authentication="x509Certificate") == _by_proton(
            event, "638", "x509Certificate"
        )


def test_proton_reads_every_field_back() -> None:
    event = _event(
        b"\x00\xffbody",
        module="m1",
        properties={"a": "1", "ü": "ß"},
        system={"$.mid": "id", "$.uid": "user", "$.cid": "corr", "$.ct": "text/plain", "$.ce": "utf-8"},
        sequence=-3,
    )
    message = Message()
    message.decode(encode_event(event, generation_id="gen", authentication="sas"))
    assert message.body == b"\x00\xffbody"
    assert (message.id, message.user_id, message.correlation_id) == ("id", b"user", "corr")
    assert (message.content_type, message.content_encoding) == ("text/plain", "utf-8")
    assert message.properties == {"a": "1", "ü": "ß"}
    annotations: dict[object, object] = dict(message.annotations or {})
    assert annotations["x-opt-sequence-number"] == -3
    assert annotations["x-opt-offset"] == "300"
    assert annotations["x-opt-enqueued-time"] == 1767268800250
    assert annotations["iothub-connection-module-id"] == "m1"
    assert json.loads(str(annotations["iothub-connection-auth-method"]))["scope"] == "module"
    assert annotations["iothub-connection-auth-generation-id"] == "gen"


_text = st.text(st.characters(codec="utf-8"), max_size=300)
_optional = st.none() | _text


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=600),
    device=st.text(st.characters(codec="utf-8"), min_size=1, max_size=300),
    module=_optional,
    properties=st.dictionaries(_text, _optional, max_size=5),
    system=st.fixed_dictionaries(
        {},
        optional={
            **{key: _optional for key in ("$.mid", "$.cid", "$.uid")},
            **{key: st.none() | st.text(st.characters(codec="utf-8"), max_size=40) for key in ("$.ct", "$.ce")},
        },
    ),
    sequence=st.integers(-(2**63), 2**63 - 1),
    offset=st.integers(0, 2**62),
    source=st.sampled_from(["Telemetry", "twinChangeEvents", "deviceLifecycleEvents"]),
    generation_id=_text,
    authentication=st.sampled_from(["sas", "x509Certificate"]),
)
def test_any_event_is_byte_for_byte_what_proton_writes(
    body: bytes,
    device: str,
    module: str | None,
    properties: dict[str, str | None],
    system: dict[str, str | None],
    sequence: int,
    offset: int,
    source: MessageSource,
    generation_id: str,
    authentication: str,
) -> None:
    event = _event(
        body, device=device, module=module, properties=properties, system=system, sequence=sequence, offset=offset,
        source=source,
    )
    assert encode_event(event, generation_id=generation_id, authentication=authentication) == _by_proton(
        event, generation_id, authentication
    )


def test_a_symbol_ends_at_a_nul_as_proton_writes_it() -> None:
    # proton writes and reads a symbol as a C string: what follows a NUL in a content type is not sent.
    event = _event(system={"$.ct": "text/plain\x00x", "$.ce": "\x00"})
    encoded = encode_event(event, generation_id="g", authentication="sas")
    assert encoded == _by_proton(event, "g")
    message = Message()
    message.decode(encoded)
    assert message.content_type == "text/plain"
