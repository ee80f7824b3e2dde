"""What each simulated device sends: the telemetry settings and the messages built from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from aioiothub import Message
from aioiothub.simulator.template import DEFAULT_TEMPLATE, DEFAULT_VARIABLES, PayloadTemplate

__all__ = ["MessageFactory", "TrafficSettings"]

_MAX_TELEMETRY_BYTES = 256 * 1024


@dataclass(frozen=True)
class TrafficSettings:
    """The telemetry and twin traffic of every device.

    Attributes:
        interval: seconds between two messages of one device.
        jitter: each interval is spread by up to this fraction either way (0 to 1).
        messages: messages per device; ``None`` sends until the run stops.
        qos: MQTT QoS of the telemetry (0 or 1).
        template: the payload template (see :mod:`aioiothub.simulator.template`).
        variables: the template's variable declarations, as JSON text.
        payload_size: send this many fixed random bytes instead of the template.
        properties: application properties of every message; values may use template variables.
        report_interval: seconds between two reported-property updates of one device (``None``:
            none besides the acknowledgements of desired properties).
        seed: seed for the random parts of payloads (reproducible runs).
    """

    interval: float = 10.0
    jitter: float = 0.1
    messages: int | None = None
    qos: int = 1
    template: str = DEFAULT_TEMPLATE
    variables: str = DEFAULT_VARIABLES
    payload_size: int | None = None
    properties: dict[str, str] = field(default_factory=dict)
    report_interval: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.interval, bool) or not isinstance(self.interval, int | float) or not self.interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {self.interval!r}")
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be a fraction from 0 to 1, not {self.jitter!r}")
        if self.messages is not None and (
            isinstance(self.messages, bool) or not isinstance(self.messages, int) or self.messages < 1
        ):
            raise ValueError(f"messages must be a positive integer or None, not {self.messages!r}")
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1 (IoT Hub closes the connection on QoS 2), not {self.qos!r}")
        if self.payload_size is not None and (
            isinstance(self.payload_size, bool)
            or not isinstance(self.payload_size, int)
            or not 0 <= self.payload_size <= _MAX_TELEMETRY_BYTES
        ):
            raise ValueError(f"payload_size must be from 0 to {_MAX_TELEMETRY_BYTES} bytes, not {self.payload_size!r}")
        if self.report_interval is not None and not self.report_interval > 0:
            raise ValueError(f"report_interval must be a positive number of seconds, not {self.report_interval!r}")
        for name, value in self.properties.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("properties must map strings to strings")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, for worker processes."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrafficSettings:
        """The inverse of :meth:`to_json`."""
        return cls(**data)


class MessageFactory:
    """Builds every message of a process's devices from one :class:`TrafficSettings`.

    Example:
        >>> factory = MessageFactory(TrafficSettings(template='{"n": $.Counter}', variables="[]",
        ...                                          properties={"device": "$.DeviceId"}))
        >>> message = factory.build("sim-1", 7)
        >>> message.body, dict(message.properties), message.content_type
        (b'{"n": 7}', {'device': 'sim-1'}, 'application/json')

    Raises:
        ValueError: the template, its variables or the properties are invalid, or a message would
            be larger than IoT Hub accepts (checked once, with the first message of a sample device).
    """

    def __init__(self, settings: TrafficSettings) -> None:
        self._fixed_body: bytes | None = None
        self._template: PayloadTemplate | None = None
        if settings.payload_size is not None:
            # Fixed bytes: the same body every time, so building it costs nothing per message.
            self._fixed_body = bytes((index * 7919) % 251 for index in range(settings.payload_size))
        else:
            self._template = PayloadTemplate(settings.template, settings.variables, seed=settings.seed)
        self._properties = {
            name: PayloadTemplate(value, settings.variables, seed=settings.seed) if "$." in value else value
            for name, value in settings.properties.items()
        }
        sample = self.build("sample-device-0000000000", 1)
        if sample.wire_size() > _MAX_TELEMETRY_BYTES:
            raise ValueError(f"a message would be {sample.wire_size()} bytes; IoT Hub accepts at most 262144")

    def build(self, device_id: str, counter: int) -> Message:
        """Message number ``counter`` (from 1) of ``device_id``."""
        properties = {
            name: value if isinstance(value, str) else value.render(device_id, counter)
            for name, value in self._properties.items()
        }
        if self._template is None:
            assert self._fixed_body is not None
            return Message(self._fixed_body, properties=properties)
        return Message(
            self._template.render(device_id, counter),
            content_type="application/json",
            content_encoding="utf-8",
            properties=properties,
        )
