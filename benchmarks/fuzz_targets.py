"""Every parser that reads what a peer sent, as a fuzz target: bytes in, only the library's errors out.

Shared by the property-based tests (``tests/reliability/test_fuzz_parsers.py``, hypothesis, in CI)
and the coverage-guided fuzz command (``benchmarks/fuzz.py``, atheris, millions of inputs). A target
takes arbitrary bytes and feeds them to one parser the way the network would: topics and tokens as
text (the bytes decoded as UTF-8 with replacement, as a topic or password is), bodies and streams as
bytes. A target may raise only what :data:`EXPECTED` lists; anything else -- ``IndexError``,
``RecursionError``, ``KeyError``, ``UnicodeDecodeError`` -- is a defect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aioiothub.exceptions import ProtocolError
from aioiothub.protocol import dps, topics
from aioiothub.protocol.connect import parse_dps_username, parse_username
from aioiothub.protocol.connection_string import ConnectionString
from aioiothub.protocol.device import DeviceProtocol
from aioiothub.protocol.json_payloads import load_json_payload
from aioiothub.protocol.mqtt import MqttClientCodec, MqttServerCodec
from aioiothub.protocol.properties import decode_property_bag
from aioiothub.protocol.sas import parse_sas_token, verify_sas_token
from aioiothub.protocol.twin import merge_patch, validate_patch

__all__ = ["EXPECTED", "SEEDS", "TARGETS"]

#: What a parser may raise for input it refuses (CredentialError is a ValueError).
EXPECTED: Final = (ProtocolError, ValueError)

_KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _stream(codec: MqttServerCodec | MqttClientCodec, data: bytes) -> None:
    # The first byte decides how the rest is chunked, as TCP segments would cut it.
    size = (data[0] % 7 + 1) if data else 1
    for start in range(1, len(data), size):
        codec.feed(data[start : start + size])


def _device_inbound(data: bytes) -> None:
    # The first byte picks the topic a hub would send the rest on.
    protocol: DeviceProtocol[object] = DeviceProtocol("dev1", "mod1")
    protocol.begin_twin_request("get", b"", None)
    topic = (
        "$iothub/twin/res/200/?$rid=1",
        "$iothub/twin/PATCH/properties/desired/?$version=2",
        "$iothub/methods/POST/m/?$rid=1",
        "devices/dev1/modules/mod1/inputs/in/",
        _text(data[1:]),
    )[data[0] % 5 if data else 0]
    protocol.receive(topic, data[1:])


def _twin_document(data: bytes) -> None:
    document = load_json_payload(data, "twin patch")
    if isinstance(document, dict):
        validate_patch(document)
        merge_patch({"a": {"b": 1}}, document)


TARGETS: Final[dict[str, Callable[[bytes], object]]] = {
    "telemetry topic": lambda data: topics.parse_telemetry_topic(_text(data)),
    "c2d topic": lambda data: topics.parse_c2d_topic(_text(data)),
    "input topic": lambda data: topics.parse_input_topic(_text(data)),
    "twin request topic": lambda data: topics.parse_twin_request_topic(_text(data)),
    "twin response topic": lambda data: topics.parse_twin_response_topic(_text(data)),
    "desired topic": lambda data: topics.parse_twin_desired_topic(_text(data)),
    "method request topic": lambda data: topics.parse_method_request_topic(_text(data)),
    "method response topic": lambda data: topics.parse_method_response_topic(_text(data)),
    "dps request topic": lambda data: topics.parse_dps_request_topic(_text(data)),
    "dps response topic": lambda data: topics.parse_dps_response_topic(_text(data)),
    "property bag": lambda data: decode_property_bag(_text(data)),
    "username": lambda data: parse_username(_text(data)),
    "dps username": lambda data: parse_dps_username(_text(data)),
    "connection string": lambda data: ConnectionString.parse(_text(data)),
    "sas token": lambda data: parse_sas_token(_text(data)),
    "sas verification": lambda data: verify_sas_token(_text(data), _KEY, resource_uri="h/devices/d", now=0),
    "mqtt server role": lambda data: _stream(MqttServerCodec(), data),
    "mqtt client role": lambda data: _stream(MqttClientCodec(), data),
    "dps registration request": dps.parse_registration_request,
    "dps registration response": lambda data: dps.parse_registration_response(200 + (data[:1] or b"\0")[0], data[1:]),
    "twin json": _twin_document,
    "device inbound": _device_inbound,
}


# Signed with _KEY for h/devices/d: a valid token, so that mutation starts inside verification.
_TOKEN = (
    b"SharedAccessSignature sr=h%2Fdevices%2Fd&sig=J3g8SldTtb%2FggFgMvJHQlG%2F35G1BVg%2FE1lJTznhJi2E%3D"
    b"&se=1578941692"
)

#: Well-formed inputs each target starts from, so that mutation explores past the first check.
SEEDS: Final[dict[str, list[bytes]]] = {
    "telemetry topic": [b"devices/d/messages/events/", b"devices/d/modules/m/messages/events/%24.ct=a&k=v/"],
    "c2d topic": [b"devices/d/messages/devicebound/%24.mid=m&%24.to=%2Fdevices%2Fd&iothub-ack=full"],
    "input topic": [b"devices/d/modules/m/inputs/in1/k=v&%24.mid=1"],
    "twin request topic": [b"$iothub/twin/GET/?$rid=1", b"$iothub/twin/PATCH/properties/reported/?$rid=a%20b"],
    "twin response topic": [b"$iothub/twin/res/204/?$rid=id_one&$version=16", b"$iothub/twin/res/400/?$rid=1"],
    "desired topic": [b"$iothub/twin/PATCH/properties/desired/?$version=3"],
    "method request topic": [b"$iothub/methods/POST/component_one*TestMethod/?$rid=1"],
    "method response topic": [b"$iothub/methods/res/200/?$rid=2"],
    "dps request topic": [
        b"$dps/registrations/PUT/iotdps-register/?$rid=1",
        b"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=4.d0a6.42d7",
    ],
    "dps response topic": [b"$dps/registrations/res/202/?$rid=1&retry-after=3"],
    "property bag": [b"%24.mid=m1&alert=1&k&e=", b"a%2Bb=%E2%82%AC"],
    "username": [
        b"myiothub.azure-devices.net/my_device/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.6.0-beta.1",
        b"h/d/m/?api-version=2021-04-12&model-id=dtmi%3Ax%3By%3B1",
    ],
    "dps username": [b"0neFEEDC0DE/registrations/myRegistrationId/api-version=2019-03-31&ClientVersion=x%2F1"],
    "connection string": [b"HostName=h.azure-devices.net;DeviceId=d;ModuleId=m;SharedAccessKey=a2V5;GatewayHostName=g"],
    "sas token": [_TOKEN, _TOKEN + b"&skn=registration"],
    "sas verification": [_TOKEN],
    "mqtt server role": [
        b"\x02\x10\x1a\x00\x04MQTT\x04\xc2\x00<\x00\x02d1\x00\x04user\x00\x04pass",
        b"\x00\x32\x0b\x00\x05a/b/c\x00\x01hi\x82\x08\x00\x02\x00\x03a/#\x01\xc0\x00\xe0\x00",
    ],
    "mqtt client role": [
        b"\x00\x20\x02\x01\x00\x40\x02\x00\x01\x90\x03\x00\x01\x01\xd0\x00\x32\x07\x00\x01t\x00\x05xy"
    ],
    "dps registration request": [b'{"registrationId":"r1","payload":{"modelId":"dtmi:x;1"}}'],
    "dps registration response": [
        b'\x00{"operationId":"4.x","status":"assigned","registrationState":{"registrationId":"r","assignedHub":"h",'
        b'"deviceId":"d","status":"assigned","substatus":"initialAssignment","etag":"e","payload":{}}}',
    ],
    "twin json": [b'{"a":{"b":[1,2,{"c":null}]},"d":"x","e":1.5}'],
    "device inbound": [b'\x00{"desired":{"$version":1},"reported":{}}', b'\x01{"a":1,"$version":2}', b"\x02[1]"],
}
