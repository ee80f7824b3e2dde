"""What the hub tells a traffic log: each operation a device connection or the service side asks of it.

:class:`~aioiothub.emulator.hub.core.HubCore` and :class:`~aioiothub.emulator.hub.Hub` call the
:class:`TrafficObserver` set as ``hub.core.traffic`` (``--log-traffic``,
:mod:`aioiothub.emulator.traffic`); with none set they call nothing.
"""

from __future__ import annotations

from typing import Protocol

from aioiothub.emulator.hub.admission import Admission
from aioiothub.emulator.hub.connections import Connection
from aioiothub.emulator.hub.identity import Identity
from aioiothub.emulator.hub.queues import CloudMessage
from aioiothub.emulator.hub.twins import TwinAnswer
from aioiothub.protocol.mqtt import Connect
from aioiothub.protocol.topics import TwinRequestTopic

__all__ = ["TrafficObserver"]


class TrafficObserver(Protocol):
    """Hears of each operation as the hub performs it; it must not raise (see the module docstring)."""

    def connect_refused(self, connect: Connect, admission: Admission) -> None:
        """A CONNECT was refused."""

    def connected(self, connection: Connection, *, resumed: bool) -> None:
        """A connection was accepted; ``resumed``: it took over an earlier session."""

    def disconnected(self, connection: Connection) -> None:
        """An identity's live connection ended."""

    def device_message(self, identity: Identity, body: bytes, *, will: bool) -> None:
        """A device-to-cloud message (or a published will) was stored."""

    def twin_request(
        self, identity: Identity, request: TwinRequestTopic, body: bytes, answer: TwinAnswer | None
    ) -> None:
        """A twin GET or reported PATCH was served (``answer`` ``None``: left unanswered)."""

    def method_answered(self, identity: Identity, request_id: str, status: int, body: bytes) -> None:
        """A device answered a direct method."""

    def acknowledged(self, identity: Identity, message: CloudMessage) -> None:
        """A device acknowledged a cloud-to-device or input message."""

    def service_call(self, label: str, what: str) -> None:
        """The service side changed a twin, queued a message or called a method (``what`` says which)."""

