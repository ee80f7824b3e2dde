"""Exceptions raised by aioiothub.

Everything the library raises at run time derives from :class:`IoTHubError`::

    IoTHubError                       root of everything the library raises at run time
    ├── CredentialError               bad key, malformed/expired token, unreadable certificate
    ├── ConnectError                  TCP/TLS/CONNACK failure; .return_code
    │   ├── AuthenticationError       CONNACK 4/5
    │   └── DeviceDisabledError       CONNACK 3: the device may be disabled in the hub
    ├── ConnectionLostError           dropped and not recovered; .reason (a LossReason or None)
    ├── ProtocolError                 the peer sent something unparsable
    ├── ServiceError                  the hub answered non-2xx; .status, .request_id
    │   └── ThrottledError            429
    └── OutboxError                   the durable outbox cannot take or keep a message; .path
        ├── OutboxFull                full, with when_full="reject"; .limit
        ├── OutboxCorruptError        not an outbox file, or a damaged one
        ├── OutboxSchemaError         written by a newer aioiothub (a newer schema version)
        ├── OutboxStorageError        the disk refused: full, read-only, I/O error
        └── OutboxInUseError          another live client already delivers this identity's queue

Caller mistakes raise :class:`ValueError` or :class:`TypeError`, lifecycle misuse raises
:class:`RuntimeError`, and deadlines raise the built-in :class:`TimeoutError` (``send_message``'s
is a :class:`SendTimeoutError`, which says whether the message left at all). Errors from the MQTT
library underneath are translated at the transport boundary and never escape as they are.
"""

from __future__ import annotations

import enum

__all__ = [
    "AuthenticationError",
    "ConnectError",
    "ConnectionLostError",
    "CredentialError",
    "DeviceDisabledError",
    "IoTHubError",
    "LossReason",
    "OutboxCorruptError",
    "OutboxError",
    "OutboxFull",
    "OutboxInUseError",
    "OutboxSchemaError",
    "OutboxStorageError",
    "ProtocolError",
    "SendTimeoutError",
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


class DeviceDisabledError(ConnectError):
    """The hub refused the connection with CONNACK 3 ("server unavailable").

    IoT Hub answers a disabled device (or a module of one) this way, so that is the likely cause;
    it is also what a hub that is briefly unavailable answers, which is why the client keeps
    retrying it after a drop like any other refused connect (the C SDK reports it as
    ``DEVICE_DISABLED``).
    """


class LossReason(enum.StrEnum):
    """Why a connection ended, as :attr:`ConnectionLostError.reason` tells it.

    MQTT 3.1.1 has no DISCONNECT from the server: when IoT Hub ends a connection (a newer
    connection of the same identity, a disabled device, a token that expired), it closes it, which
    the client sees as :attr:`EOF`.
    """

    EOF = "eof"
    """The hub closed the connection (end of stream, with or without a TLS close_notify)."""
    RESET = "reset"
    """The network dropped it: the connection was reset or a socket operation failed."""
    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    """Nothing came back in time: no PINGRESP to a PINGREQ, or no PUBACK within the liveness timeout."""
    TLS_ERROR = "tls_error"
    """The TLS layer failed (a bad record, an alert from the hub)."""
    PROTOCOL_ERROR = "protocol_error"
    """The hub sent something that is not MQTT as IoT Hub speaks it."""
    CLOSED = "closed"
    """This side closed it (the client closed, or a planned reconnect)."""


class ConnectionLostError(IoTHubError):
    """The connection dropped and was not recovered (reconnect disabled or given up).

    Attributes:
        reason: why the connection ended (a :class:`LossReason`), or ``None`` when this error is
            not about a connection ending (an operation tried without one). The underlying error,
            when there is one (a reset socket, a TLS error), is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, reason: LossReason | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class SendTimeoutError(TimeoutError):
    """``send_message`` was not acknowledged within ``request_timeout``.

    A :class:`TimeoutError`, so code catching that keeps working.

    Attributes:
        sent: whether the message went out at all. ``False``: there was no connection for the
            whole deadline (or no room among the unacknowledged messages), so the hub never saw
            it. ``True``: it was sent and its PUBACK did not come in time, so the hub may have it
            (sending it again may duplicate it).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


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


class OutboxError(IoTHubError):
    """The durable outbox cannot take, keep or read a message.

    What was committed before the error stays in the file: no subclass is raised after data loss.

    Attributes:
        path: the outbox file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class OutboxFull(OutboxError):
    """The outbox is at its bound and ``when_full="reject"``: the message was not taken.

    Attributes:
        limit: which bound: ``"max_messages"`` or ``"max_bytes"``.
    """

    def __init__(self, message: str, *, path: str, limit: str) -> None:
        super().__init__(message, path=path)
        self.limit = limit


class OutboxCorruptError(OutboxError):
    """The file is not an outbox (another program's file or database) or it is damaged."""


class OutboxSchemaError(OutboxError):
    """The file was written by a newer aioiothub with a schema this version cannot read.

    Attributes:
        version: the file's schema version.
        supported: the newest schema version this aioiothub reads.
    """

    def __init__(self, message: str, *, path: str, version: int, supported: int) -> None:
        super().__init__(message, path=path)
        self.version = version
        self.supported = supported


class OutboxStorageError(OutboxError):
    """The disk refused a write or a read: it is full, the path is read-only, or an I/O error."""


class OutboxInUseError(OutboxError):
    """Another live client, in this process or another, already delivers this identity's queue.

    Attributes:
        identity: the queue's identity (``device_id`` or ``device_id/module_id``).
    """

    def __init__(self, message: str, *, path: str, identity: str) -> None:
        super().__init__(message, path=path)
        self.identity = identity
