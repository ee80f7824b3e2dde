"""The one exception the hub raises into a device connection: close it, the device broke a rule."""

from __future__ import annotations

__all__ = ["RuleViolation"]


class RuleViolation(Exception):
    """The connection that caused this must be closed: its device broke a rule, or a fault was injected.

    The hub raises it from the calls a connection makes (storing telemetry, serving a twin request);
    the connection ends itself and logs :attr:`reason` at INFO.

    Attributes:
        reason: why, for the log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
