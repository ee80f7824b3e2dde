"""Topic names and subscription filters of IoT Hub and DPS, with a parser for every builder.

Builders produce the exact text a peer publishes; they take the role of the side that publishes
(device role unless the docstring says *hub role*). Parsers accept what the other side may send:
query parameters in any order, unknown parameters ignored, request ids percent-decoded, statuses and
versions as plain decimal integers. Anything else raises :class:`~aioiothub.exceptions.ProtocolError`
quoting the topic. Identifiers in topics are never percent-encoded.

Modules, one kind of topic each: :mod:`.messages` (telemetry, cloud-to-device messages, module
inputs), :mod:`.twin`, :mod:`.methods` (direct methods), :mod:`.dps` (Device Provisioning Service)
and :mod:`.subscriptions` (which filters an identity may hold); :mod:`.fields` holds the checks and
parsing steps they share. Every public name is importable from this package.
"""

from __future__ import annotations

from aioiothub.protocol.topics.dps import (
    DPS_RESPONSE_SUBSCRIPTION,
    DpsRequestTopic,
    DpsResponseTopic,
    dps_poll_topic,
    dps_register_topic,
    dps_response_topic,
    parse_dps_request_topic,
    parse_dps_response_topic,
)
from aioiothub.protocol.topics.messages import (
    C2DTopic,
    InputTopic,
    TelemetryTopic,
    c2d_subscription,
    c2d_topic,
    input_subscription,
    input_topic,
    parse_c2d_topic,
    parse_input_topic,
    parse_telemetry_topic,
    telemetry_topic,
)
from aioiothub.protocol.topics.methods import (
    METHOD_RESPONSE_PREFIX,
    METHODS_SUBSCRIPTION,
    MethodRequestTopic,
    MethodResponseTopic,
    method_request_topic,
    method_response_topic,
    parse_method_request_topic,
    parse_method_response_topic,
)
from aioiothub.protocol.topics.subscriptions import allowed_subscriptions, filter_prefix
from aioiothub.protocol.topics.twin import (
    TWIN_DESIRED_SUBSCRIPTION,
    TWIN_RESPONSE_SUBSCRIPTION,
    TWIN_TOPIC_PREFIX,
    DesiredPatchTopic,
    TwinRequestTopic,
    TwinResponseTopic,
    parse_twin_desired_topic,
    parse_twin_request_topic,
    parse_twin_response_topic,
    twin_desired_topic,
    twin_get_topic,
    twin_patch_reported_topic,
    twin_response_topic,
)

__all__ = [
    "DPS_RESPONSE_SUBSCRIPTION",
    "METHODS_SUBSCRIPTION",
    "METHOD_RESPONSE_PREFIX",
    "TWIN_DESIRED_SUBSCRIPTION",
    "TWIN_RESPONSE_SUBSCRIPTION",
    "TWIN_TOPIC_PREFIX",
    "C2DTopic",
    "DesiredPatchTopic",
    "DpsRequestTopic",
    "DpsResponseTopic",
    "InputTopic",
    "MethodRequestTopic",
    "MethodResponseTopic",
    "TelemetryTopic",
    "TwinRequestTopic",
    "TwinResponseTopic",
    "allowed_subscriptions",
    "c2d_subscription",
    "c2d_topic",
    "dps_poll_topic",
    "dps_register_topic",
    "dps_response_topic",
    "filter_prefix",
    "input_subscription",
    "input_topic",
    "method_request_topic",
    "method_response_topic",
    "parse_c2d_topic",
    "parse_dps_request_topic",
    "parse_dps_response_topic",
    "parse_input_topic",
    "parse_method_request_topic",
    "parse_method_response_topic",
    "parse_telemetry_topic",
    "parse_twin_desired_topic",
    "parse_twin_request_topic",
    "parse_twin_response_topic",
    "telemetry_topic",
    "twin_desired_topic",
    "twin_get_topic",
    "twin_patch_reported_topic",
    "twin_response_topic",
]
