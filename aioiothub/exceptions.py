"""Exceptions raised by aioiothub.

Everything the library raises at run time derives from :class:`IoTHubError`::

    IoTHubError                       root of everything the library raises at run time
    ├── CredentialError               bad key, malformed/expired token, unreadable certificate
    ├── ConnectError                  TCP/TLS/CONNACK failure; .return_code
    │   └── AuthenticationError       CONNACK 4/5
    ├── ConnectionLostError           dropped and not recovered (reconnect disabled or given up)
    ├── ProtocolError                 the peer sent something unparsable
    └── ServiceError                  the hub answered non-2xx; .status, .request_id
        └── ThrottledError            429

Caller mistakes raise :class:`ValueError` or :class:`TypeError`, lifecycle misuse raises
:class:`RuntimeError`, and deadlines raise the built-in :class:`TimeoutError`. Errors from the MQTT
library underneath are translated at the transport boundary and never escape as they are.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConnectError",
    "ConnectionLostError",
    "CredentialError",
    "IoTHubError",
    "ProtocolError",
    "ServiceError",
    "ThrottledError",
]


class IoTHubError(Exception):
    """Root of every run-time error raised by aioiothub."""


class CredentialError(IoTHubError, ValueError):
    """A key, token or certificate cannot be used (malformed, expired, unreadable).

    It is also a :class:`ValueError` because a bad key or token passed in by the caller is an invalid
    argument as much as a credential failure, and code catching either should see it.
    """


class ConnectError(IoTHubError):
    """The connection could not be established (TCP, TLS or a refused CONNACK).

    Attributes:
        return_code: the MQTT CONNACK return code, or ``None`` when the failure happened
            before a CONNACK arrived.
    """

    def __init__(self, message: str, *, return_code: int | None = None) -> None:
        super().__init__(message)
        self.return_code = return_code


class AuthenticationError(ConnectError):
    """The hub refused the credentials (CONNACK 4 or 5) and a fresh token cannot help."""


class ConnectionLostError(IoTHubError):
    """The connection dropped and was not recovered (reconnect disabled or given up)."""


class ProtocolError(IoTHubError):
    """The peer sent something that does not follow the IoT Hub MQTT protocol."""


class ServiceError(IoTHubError):
    """The hub answered a request with a non-2xx status.

    Attributes:
        status: the status code from the response topic.
        request_id: the ``$rid`` of the request that failed.
        error_code: the service's own error code (DPS: e.g. ``401002``), or ``None``.
        tracking_id: the service's tracking id to quote in a support request, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        request_id: str | None = None,
        error_code: int | None = None,
        tracking_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.error_code = error_code
        self.tracking_id = tracking_id


class ThrottledError(ServiceError):
    """The hub answered 429: too many requests; retry later."""


def unwrap_group(error: BaseException, *, fatal: BaseException | None = None) -> BaseException:
    """The one error that explains what ended a task group, out of anyio's exception groups.

    Cancellations are dropped, and so is any error raised *because of* another: one whose
    ``__cause__`` is ``fatal`` or another error of the group (an operation that was waiting when the
    session failed). What remains, if it is one error, is returned; otherwise the group as it is.
    """
    if not isinstance(error, BaseExceptionGroup):
        return error
    leaves: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif not _is_cancellation(current):
            leaves.append(current)
    causes = [fatal, *leaves] if fatal is not None else leaves
    meaningful = [leaf for leaf in leaves if not any(leaf.__cause__ is cause for cause in causes if cause is not leaf)]
    return meaningful[0] if len(meaningful) == 1 else error


def _is_cancellation(error: BaseException) -> bool:
    # Without importing anyio here: asyncio's CancelledError is what anyio raises on this backend.
    import asyncio

    return isinstance(error, asyncio.CancelledError)
