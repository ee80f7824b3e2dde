"""``--log-traffic``: one readable line per MQTT or HTTP operation the emulator serves.

:class:`TrafficLoggingEmulator` is an :class:`~aioiothub.emulator.Emulator` that writes a line for
every CONNECT decision, connection end, telemetry message, twin request, method call and answer,
cloud-to-device message and acknowledgement, and every HTTP request with its status. Lines name
identities, topics' meaning, sizes and statuses -- never a key, token, signature or query string
(blob upload URLs carry their SAS in the query).
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Mapping
from typing import Any

from aioiothub.emulator.https import HttpRequest
from aioiothub.emulator.hub import Admission, Connection, Identity, MethodResult
from aioiothub.emulator.hub.connections import PersistentSubscriptions
from aioiothub.emulator.hub.queues import AckMode, CloudMessage
from aioiothub.emulator.hub.twins import TwinAnswer
from aioiothub.emulator.server import Emulator
from aioiothub.protocol.mqtt import Connect
from aioiothub.protocol.topics import TwinRequestTopic

__all__ = ["TrafficLoggingEmulator"]


def _stdout(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


class TrafficLoggingEmulator(Emulator):
    """An emulator that logs its traffic (see the module docstring).

    Example:
        >>> async with TrafficLoggingEmulator(write=print) as hub:  # doctest: +SKIP
        ...     ...

    Args:
        write: where each line goes (standard output by default).
        **options: as for :class:`~aioiothub.emulator.Emulator`.
    """

    def __init__(self, *, write: Callable[[str], None] = _stdout, **options: Any) -> None:
        super().__init__(**options)
        self._write_line = write
        self._https.router.observer = self._http_answered

    def _log(self, kind: str, text: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        self._write_line(f"{stamp} {kind:4} {text}")

    def _http_answered(self, request: HttpRequest, status: int) -> None:
        self._log("HTTP", f"{request.method} {request.path} -> {status}")

    # --- MQTT, seen from the calls a connection makes into the hub ---------------------------

    def admit(self, connect: Connect, client_certificate_der: bytes | None, *, now: float) -> Admission:
        admission = super().admit(connect, client_certificate_der, now=now)
        if admission.return_code:
            self._log("MQTT", f"{connect.client_id} CONNECT refused ({admission.return_code}): {admission.reason}")
        return admission

    def attach(self, connection: Connection, *, clean_session: bool) -> tuple[PersistentSubscriptions, bool]:
        result = super().attach(connection, clean_session=clean_session)
        session = "resumed session" if result[1] else "new session"
        self._log("MQTT", f"{connection.identity.label} CONNECT accepted ({session})")
        return result

    def detach(self, connection: Connection) -> None:
        if self.connection(*connection.identity.key) is connection:
            self._log("MQTT", f"{connection.identity.label} disconnected")
        super().detach(connection)

    def store_telemetry(self, identity: Identity, topic: str, body: bytes, **options: Any) -> None:
        super().store_telemetry(identity, topic, body, **options)
        kind = "will message" if options.get("will") else "telemetry"
        self._log("MQTT", f"{identity.label} {kind}: {len(body)} bytes")

    def handle_twin_request(self, identity: Identity, request: TwinRequestTopic, body: bytes) -> TwinAnswer | None:
        answer = super().handle_twin_request(identity, request, body)
        what = "twin GET" if request.operation == "GET" else f"reported PATCH ({len(body)} bytes)"
        outcome = "unanswered" if answer is None else str(answer[0])
        version = f", reported $version {answer[2]}" if answer is not None and answer[2] is not None else ""
        self._log("MQTT", f"{identity.label} {what} -> {outcome}{version}")
        return answer

    def complete_method(self, identity: Identity, request_id: str, status: int, body: bytes) -> None:
        self._log("MQTT", f"{identity.label} method answer $rid={request_id}: status {status}, {len(body)} bytes")
        super().complete_method(identity, request_id, status, body)

    def complete(self, identity: Identity, message: CloudMessage) -> None:
        self._log("MQTT", f"{identity.label} acknowledged message {message.message_id or '(input)'}")
        super().complete(identity, message)

    # --- what the service side sends -------------------------------------------------------------

    async def update_desired(self, device_id: str, patch: Mapping[str, Any], *, module_id: str | None = None) -> int:
        version = await super().update_desired(device_id, patch, module_id=module_id)
        label = device_id if module_id is None else f"{device_id}/{module_id}"
        self._log("SVC", f"{label} desired properties updated: $version {version}")
        return version

    async def invoke_method(
        self, device_id: str, method_name: str, payload: Any = None, **options: Any
    ) -> MethodResult:
        module_id = options.get("module_id")
        label = device_id if module_id is None else f"{device_id}/{module_id}"
        self._log("SVC", f"{label} method {method_name!r} invoked")
        result = await super().invoke_method(device_id, method_name, payload, **options)
        self._log("SVC", f"{label} method {method_name!r} -> {result.status}")
        return result

    async def send_c2d(self, device_id: str, body: bytes | str, **options: Any) -> str:
        message_id = await super().send_c2d(device_id, body, **options)
        ack: AckMode = options.get("ack", "none")
        self._log("SVC", f"{device_id} cloud-to-device message {message_id} queued ({len(body)} bytes, ack {ack})")
        return message_id

    async def update_twin(self, device_id: str, **options: Any) -> None:
        await super().update_twin(device_id, **options)
        self._log("SVC", f"{device_id} twin patched")

    async def replace_twin(self, device_id: str, **options: Any) -> None:
        await super().replace_twin(device_id, **options)
        self._log("SVC", f"{device_id} twin replaced")
