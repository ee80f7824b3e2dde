"""The telemetry store: every device-to-cloud message the hub accepted, and the waits and streams on it.

Theory of operation
-------------------
Records live in a bounded deque, oldest first; when it is full the oldest record falls out. A running
count of records ever stored (``_total``) gives each record a position that does not change when
older ones are evicted or cleared, so a stream keeps its place by position alone and can tell how
many it missed. Connections store a whole received batch and then call :meth:`TelemetryStore.stored`
once, which wakes every waiter and stream through one
:class:`~aioiothub.emulator.hub.values.Broadcast`.

What a topic says is decoded once per distinct topic, a fresh message id aside
(:mod:`~aioiothub.emulator.hub.telemetry_topics`).
"""

from __future__ import annotations

import base64
import datetime
import logging
import math
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

import anyio

from aioiothub.emulator.hub.errors import RuleViolation
from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.telemetry_topics import TopicCache
from aioiothub.emulator.hub.values import Broadcast, check_count, iso_time
from aioiothub.exceptions import ProtocolError
from aioiothub.protocol.json_payloads import load_json_payload
from aioiothub.protocol.limits import MAX_TELEMETRY_BYTES

__all__ = ["TelemetryRecord", "TelemetryStore"]

logger = logging.getLogger("aioiothub.emulator")


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    """One device-to-cloud message as the hub received it.

    Example:
        >>> record = (await hub.wait_for_telemetry(1, device_id="dev1"))[0]  # doctest: +SKIP
        >>> record.body, record.properties, record.system_properties["$.ct"]  # doctest: +SKIP
        (b'{"t":21}', {'alert': '1'}, 'application/json')

    Attributes:
        device_id: the sending device.
        module_id: the sending module, or ``None``.
        body: the message body.
        properties: the application properties (``mqtt-retain`` and ``iothub-MessageType`` included
            when the hub added them).
        system_properties: the system properties (``$.mid``, ``$.ct``, ...) under their wire names.
        enqueued_time: when the hub accepted the message (UTC).
    """

    device_id: str
    module_id: str | None
    body: bytes
    properties: Mapping[str, str | None]
    system_properties: Mapping[str, str | None]
    enqueued_time: datetime.datetime

    @property
    def annotations(self) -> dict[str, str]:
        """The annotations IoT Hub stamps on every message it routes.

        ``iothub-connection-device-id``, ``iothub-connection-module-id`` (modules only) and
        ``iothub-enqueuedtime`` (ISO 8601, UTC).
        """
        annotations = {"iothub-connection-device-id": self.device_id}
        if self.module_id is not None:
            annotations["iothub-connection-module-id"] = self.module_id
        annotations["iothub-enqueuedtime"] = iso_time(self.enqueued_time)
        return annotations

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data: what the emulator's REST API answers for it.

        ``body`` is the decoded JSON when the body is JSON, else its UTF-8 text, else ``None``;
        ``bodyBase64`` always holds the exact bytes.

        Example:
            >>> record.as_dict()["properties"]  # doctest: +SKIP
            {'alert': '1'}
        """
        body: Any
        try:
            body = load_json_payload(self.body, "the telemetry body")
        except ProtocolError:
            try:
                body = self.body.decode("utf-8")
            except UnicodeDecodeError:
                body = None
        return {
            "deviceId": self.device_id,
            "moduleId": self.module_id,
            "enqueuedTime": iso_time(self.enqueued_time),
            "properties": dict(self.properties),
            "systemProperties": dict(self.system_properties),
            "annotations": self.annotations,
            "body": body,
            "bodyBase64": base64.b64encode(self.body).decode("ascii"),
        }

    def json(self) -> Any:
        """Decode the body as JSON (UTF-8).

        Raises:
            ValueError: the body is not JSON, or is nested too deeply to decode.
        """
        try:
            return load_json_payload(self.body, "the telemetry body")
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None


def _matches(record: TelemetryRecord, device_id: str | None, module_id: str | None) -> bool:
    if device_id is not None and record.device_id != device_id:
        return False
    return module_id is None or record.module_id == module_id


class TelemetryStore:
    """The telemetry one hub received, at most ``limit`` records.

    Args:
        limit: how many records to keep; older ones are dropped first.
    """

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"telemetry_limit must be a positive int, got {limit!r}")
        self._records: deque[TelemetryRecord] = deque(maxlen=limit)
        self._topics = TopicCache()
        # Running count of records ever stored: streams keep their place by it across evictions.
        self._total = 0
        self._cleared_at = 0
        self._added = Broadcast()

    def store(
        self,
        identity: Identity,
        topic: str,
        body: bytes,
        *,
        retain: bool,
        enqueued_time: datetime.datetime,
        will: bool = False,
    ) -> TelemetryRecord:
        """Accept one message from ``identity``'s connection and return its record; call :meth:`stored` after a batch.

        Raises:
            RuleViolation: the topic belongs to another identity or the message is over 256 KiB.
            ProtocolError: the topic or its property bag is malformed.
        """
        info, system, properties_size = self._topics.lookup(topic)
        if info.device_id != identity.device_id or info.module_id != identity.module_id:
            raise RuleViolation(f"publish to another identity's telemetry topic {topic!r}")
        size = len(body) + properties_size
        if size > MAX_TELEMETRY_BYTES:
            raise RuleViolation(f"telemetry of {size} bytes exceeds {MAX_TELEMETRY_BYTES} bytes")
        application = info.application
        if retain or will:
            extra = {"mqtt-retain": "true"} if retain else {}
            if will:
                extra["iothub-MessageType"] = "Will"
            application = MappingProxyType({**application, **extra})
        record = TelemetryRecord(identity.device_id, identity.module_id, body, application, system, enqueued_time)
        self._records.append(record)
        self._total += 1
        return record

    def stored(self) -> None:
        """Wake everything waiting for telemetry (after one or more :meth:`store`)."""
        self._added.notify()

    def records(self, device_id: str | None, module_id: str | None) -> list[TelemetryRecord]:
        """The matching records, oldest first (see :meth:`Hub.telemetry <aioiothub.emulator.Hub.telemetry>`)."""
        return [record for record in self._records if _matches(record, device_id, module_id)]

    def clear(self) -> None:
        """Forget every record; streams carry on with the next message."""
        self._records.clear()
        self._cleared_at = self._total

    async def wait_for(
        self,
        count: int,
        device_id: str | None,
        module_id: str | None,
        timeout: float,  # noqa: ASYNC109 - see Hub.wait_for_telemetry
    ) -> list[TelemetryRecord]:
        """Wait until at least ``count`` records match, and return them all."""
        check_count(count, "count")
        with anyio.fail_after(timeout):
            while True:
                records = self.records(device_id, module_id)
                if len(records) >= count:
                    return records
                await self._added.wait()

    def stream(self, device_id: str | None, module_id: str | None) -> AsyncGenerator[TelemetryRecord, None]:
        """Yield matching records as they arrive, starting with the next one stored."""
        # With no idle limit ``follow`` never yields None.
        return cast("AsyncGenerator[TelemetryRecord, None]", self.follow(device_id, module_id, idle=math.inf))

    async def follow(
        self, device_id: str | None, module_id: str | None, *, idle: float
    ) -> AsyncGenerator[TelemetryRecord | None, None]:
        """Like :meth:`stream`, and yield ``None`` whenever nothing arrived for ``idle`` seconds.

        The idle wait is inside the generator: a consumer that instead cancelled a pending
        ``anext()`` would end the generator, and its next ``anext()`` would raise.
        """
        position = self._total
        while True:
            while position < self._total:
                first = self._total - len(self._records)
                if position < first:
                    missed = first - max(position, self._cleared_at)
                    if missed > 0:
                        logger.warning("telemetry_stream fell behind; %d messages were dropped unseen", missed)
                    position = first
                    continue
                record = self._records[position - first]
                position += 1
                if _matches(record, device_id, module_id):
                    yield record
            with anyio.move_on_after(idle) as waiting:
                await self._added.wait()
            if waiting.cancelled_caught:
                yield None
