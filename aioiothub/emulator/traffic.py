"""``--log-traffic``: one readable line per MQTT or HTTP operation the emulator serves.

:class:`TrafficLog` watches a hub (as its :class:`~aioiothub.emulator.hub.traffic_observer.TrafficObserver`)
and its HTTPS router, and writes a line for every CONNECT refused, connection accepted and ended,
telemetry message, twin request, method answer, cloud-to-device acknowledgement, service-side call
and HTTP request with its status. Lines name identities, topics' meaning, sizes and statuses --
never a key, token, signature or query string (blob upload URLs carry their SAS in the query).
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable

from aioiothub.emulator.hub import Admission, CloudMessage, Connection, Identity
from aioiothub.emulator.hub.twins import TwinAnswer
from aioiothub.emulator.rest.https import HttpRequest
from aioiothub.protocol.mqtt import Connect
from aioiothub.protocol.topics import TwinRequestTopic

__all__ = ["TrafficLog"]


def _stdout(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


class TrafficLog:
    """Writes the traffic of one emulator as lines (see the module docstring).

    Example:
        >>> async with Emulator(log_traffic=print) as hub:  # doctest: +SKIP
        ...     ...

    Args:
        write: where each line goes (standard output by default).
    """

    __slots__ = ("_write_line",)

    def __init__(self, write: Callable[[str], None] = _stdout) -> None:
        self._write_line = write

    def _log(self, kind: str, text: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        self._write_line(f"{stamp} {kind:4} {text}")

    def http_answered(self, request: HttpRequest, status: int) -> None:
        """An HTTP request was answered (the router's observer)."""
        self._log("HTTP", f"{request.method} {request.path} -> {status}")

    # --- MQTT, seen from the calls a connection makes into the hub ---------------------------

    def connect_refused(self, connect: Connect, admission: Admission) -> None:
        self._log("MQTT", f"{connect.client_id} CONNECT refused ({admission.return_code}): {admission.reason}")

    def connected(self, connection: Connection, *, resumed: bool) -> None:
        session = "resumed session" if resumed else "new session"
        self._log("MQTT", f"{connection.identity.label} CONNECT accepted ({session})")

    def disconnected(self, connection: Connection) -> None:
        self._log("MQTT", f"{connection.identity.label} disconnected")

    def device_message(self, identity: Identity, body: bytes, *, will: bool) -> None:
        kind = "will message" if will else "telemetry"
        self._log("MQTT", f"{identity.label} {kind}: {len(body)} bytes")

    def twin_request(
        self, identity: Identity, request: TwinRequestTopic, body: bytes, answer: TwinAnswer | None
    ) -> None:
        what = "twin GET" if request.operation == "GET" else f"reported PATCH ({len(body)} bytes)"
        outcome = "unanswered" if answer is None else str(answer[0])
        version = f", reported $version {answer[2]}" if answer is not None and answer[2] is not None else ""
        self._log("MQTT", f"{identity.label} {what} -> {outcome}{version}")

    def method_answered(self, identity: Identity, request_id: str, status: int, body: bytes) -> None:
        self._log("MQTT", f"{identity.label} method answer $rid={request_id}: status {status}, {len(body)} bytes")

    def acknowledged(self, identity: Identity, message: CloudMessage) -> None:
        self._log("MQTT", f"{identity.label} acknowledged message {message.message_id or '(input)'}")

    # --- what the service side sends -------------------------------------------------------------

    def service_call(self, label: str, what: str) -> None:
        self._log("SVC", f"{label} {what}")
