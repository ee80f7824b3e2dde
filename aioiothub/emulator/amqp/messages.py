"""Hub events as the AMQP messages back ends read, and the replies of the ``$cbs`` and ``$management`` nodes.

An event read from the Event Hubs-compatible endpoint carries what IoT Hub puts on it: the device's
body as a data section; its message id, correlation id, user id, content type and encoding as AMQP
properties; its application properties as sent; and as message annotations the Event Hubs fields
(``x-opt-sequence-number``, ``x-opt-offset``, ``x-opt-enqueued-time``) and IoT Hub's own
(``iothub-connection-device-id``, ``-module-id``, ``-auth-method``, ``-auth-generation-id``,
``iothub-enqueuedtime``, ``iothub-message-source``). A twin-change or lifecycle notification is the
hub's own message, sent by no connection: it carries no ``-auth-method`` nor ``-auth-generation-id``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from proton import Message, int32, symbol, timestamp

from aioiothub.emulator.hub.event_log import Event, EventLog, Partition

__all__ = ["auth_method", "event_message", "eventhub_properties", "partition_properties", "reply"]


def _milliseconds(event_time: Any) -> timestamp:
    return timestamp(int(event_time.timestamp() * 1000))


_SEQUENCE = symbol("x-opt-sequence-number")
_OFFSET = symbol("x-opt-offset")
_ENQUEUED = symbol("x-opt-enqueued-time")
_DEVICE_ID = symbol("iothub-connection-device-id")
_MODULE_ID = symbol("iothub-connection-module-id")
_AUTH_METHOD = symbol("iothub-connection-auth-method")
_GENERATION_ID = symbol("iothub-connection-auth-generation-id")
_IOTHUB_ENQUEUED = symbol("iothub-enqueuedtime")
_SOURCE = symbol("iothub-message-source")


@functools.lru_cache(maxsize=8)
def auth_method(scope: str, authentication: str) -> str:
    """The ``iothub-connection-auth-method`` annotation: JSON naming the sender's kind and credential.

    A handful of distinct values, asked for on every event: each is encoded once.

    Example:
        >>> auth_method("device", "sas")
        '{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}'
    """
    details = {"scope": scope, "type": authentication, "issuer": "iothub", "acceptingIpFilterRule": None}
    return json.dumps(details, separators=(",", ":"))


def event_message(event: Event, *, generation_id: str, authentication: str) -> Message:
    """The AMQP message a partition reader receives for ``event``.

    The readable statement of it: the endpoint sends the bytes of
    :func:`~aioiothub.emulator.amqp.event_encoding.encode_event`, which are held to this message's
    encoding byte for byte.
    """
    record = event.record
    system = record.system_properties
    enqueued = _milliseconds(event.enqueued_time)
    annotations: dict[symbol, Any] = {
        _SEQUENCE: event.sequence_number,
        _OFFSET: str(event.offset),
        _ENQUEUED: enqueued,
        _DEVICE_ID: record.device_id,
        _IOTHUB_ENQUEUED: enqueued,
        _SOURCE: event.source,
    }
    if event.source == "Telemetry":
        annotations[_AUTH_METHOD] = auth_method("device" if record.module_id is None else "module", authentication)
        annotations[_GENERATION_ID] = generation_id
    if record.module_id is not None:
        annotations[_MODULE_ID] = record.module_id
    fields: dict[str, Any] = {
        "id": system.get("$.mid"),
        "correlation_id": system.get("$.cid"),
        "properties": {name: value for name, value in record.properties.items() if value is not None},
        "annotations": annotations,
    }
    for field, key in (("content_type", "$.ct"), ("content_encoding", "$.ce")):
        if system.get(key):
            fields[field] = symbol(system[key])
    user_id = system.get("$.uid")
    if user_id is not None:
        fields["user_id"] = user_id.encode()
    return Message(body=record.body, inferred=True, **fields)


def reply(request: Message, status: int, description: str, body: Any = None) -> Message:
    """A node's answer to ``request``: its ``correlation_id`` is the request's message id."""
    # An AMQP int: uamqp's management client reads no other type for the status code.
    properties: dict[str, Any] = {"status-code": int32(status), "status-description": description}
    return Message(body=body, correlation_id=request.id, properties=properties)


def eventhub_properties(name: str, log: EventLog) -> dict[str, Any]:
    """The body of a ``$management`` READ of the event hub (``com.microsoft:eventhub``)."""
    return {
        "name": name,
        "type": "com.microsoft:eventhub",
        "created_at": _milliseconds(log.created_at),
        "partition_count": len(log.partitions),
        "partition_ids": log.partition_ids,
    }


def partition_properties(name: str, partition: Partition) -> dict[str, Any]:
    """The body of a ``$management`` READ of one partition (``com.microsoft:partition``)."""
    first, last = partition.first, partition.last
    return {
        "name": name,
        "type": "com.microsoft:partition",
        "partition": partition.identifier,
        "begin_sequence_number": first.sequence_number if first is not None else -1,
        "last_enqueued_sequence_number": last.sequence_number if last is not None else -1,
        "last_enqueued_offset": str(last.offset) if last is not None else "-1",
        "last_enqueued_time_utc": _milliseconds(last.enqueued_time) if last is not None else timestamp(0),
        "is_partition_empty": last is None,
    }
