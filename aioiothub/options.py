"""Client options: the reconnect policy and the checks every constructor argument goes through."""

from __future__ import annotations

import math
import os
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from aioiothub._outbox.outbox import Outbox
from aioiothub.message import Message

__all__ = ["ClientOptions", "ProxyOptions", "ReconnectPolicy", "require_positive_int", "require_positive_number"]


def require_positive_number(value: object, argument: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float, or raise naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{argument} must be a number, not {type(value).__name__}")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise ValueError(f"{argument} must be a finite number {bound}, not {value!r}")
    return float(value)


def require_positive_int(value: object, argument: str, *, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an integer, not {type(value).__name__}")
    if value <= 0 or (maximum is not None and value > maximum):
        limit = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"{argument} must be greater than zero{limit}, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How the client reconnects after losing its connection.

    Delays grow exponentially from ``initial_delay`` to ``max_delay``; each is spread by up to
    ``jitter`` (a fraction) so that many devices that lost the hub together do not return together.

    Args:
        initial_delay: seconds before the first reconnect attempt.
        max_delay: the longest wait between two attempts.
        multiplier: growth factor between attempts.
        jitter: fraction of each delay that is randomised (0 disables).
        max_attempts: give up (``ConnectionLostError``) after this many failed attempts in a row;
            ``None`` retries for as long as the client is open.

    Example:
        >>> policy = ReconnectPolicy(initial_delay=0.5, max_delay=10, max_attempts=20)
        >>> policy.delay(0) <= 0.5
        True
    """

    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.25
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        require_positive_number(self.initial_delay, "initial_delay", allow_zero=True)
        require_positive_number(self.max_delay, "max_delay", allow_zero=True)
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must not be smaller than initial_delay")
        if require_positive_number(self.multiplier, "multiplier") < 1:
            raise ValueError(f"multiplier must be at least 1, not {self.multiplier!r}")
        if not 0 <= require_positive_number(self.jitter, "jitter", allow_zero=True) <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}")
        if self.max_attempts is not None:
            require_positive_int(self.max_attempts, "max_attempts")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt number ``attempt`` (counted from 0)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(attempt, 64))
        return base * (1 - self.jitter * random.random())

    def gives_up_after(self, failures: int) -> bool:
        """Whether ``failures`` failed attempts in a row exhaust the policy."""
        return self.max_attempts is not None and failures >= self.max_attempts


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """An HTTP or SOCKS proxy to reach the hub through (needs the ``PySocks`` package).

    Example:
        >>> ProxyOptions("http", "proxy.example.com", 3128)
        ProxyOptions(proxy_type='http', address='proxy.example.com', port=3128, username=None, password=None)
    """

    proxy_type: Literal["http", "socks4", "socks5"]
    address: str
    port: int
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.proxy_type not in ("http", "socks4", "socks5"):
            raise ValueError(f"proxy_type must be 'http', 'socks4' or 'socks5', not {self.proxy_type!r}")
        if not isinstance(self.address, str) or not self.address:
            raise ValueError("proxy address must be a non-empty string")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"proxy port must be an integer from 1 to 65535, not {self.port!r}")

    def __repr__(self) -> str:
        password = None if self.password is None else "<redacted>"
        return (
            f"ProxyOptions(proxy_type={self.proxy_type!r}, address={self.address!r}, port={self.port!r}, "
            f"username={self.username!r}, password={password!r})"
        )


class ClientOptions(TypedDict, total=False):
    """Keyword options every client constructor and factory accepts (all optional).

    Attributes:
        port: the hub's port; 8883, or 443 with ``websockets=True``.
        websockets: MQTT over WebSocket on port 443 (through firewalls that allow only HTTPS).
        proxy: an HTTP or SOCKS proxy (:class:`ProxyOptions`).
        ssl_context: TLS settings, e.g. a custom CA. It must not allow TLS below 1.2. It is used
            as it is; with ``x509`` the client certificate is loaded into it, so give each X.509
            client a context of its own. Default: the system trust store, TLS 1.2 or newer,
            hostname checked.
        gateway_hostname: connect to this host (an IoT Edge gateway) instead of the hub.
        model_id: the Plug and Play model id (``dtmi:…``) announced when connecting.
        product_info: appended to the user agent the hub sees.
        keepalive: MQTT keep-alive in seconds (at most 1177); default 60.
        sas_ttl: lifetime in seconds of the SAS tokens signed with a shared access key; default 3600.
        request_timeout: deadline in seconds of every request (send, twin, method response) and of
            each connection attempt; default 30.
        reconnect: ``True`` (default policy), ``False`` (a lost connection ends the client) or a
            :class:`ReconnectPolicy`.
        max_in_flight: QoS 1 messages that may wait for their acknowledgement at once; default 128.
        inbound_buffer_size: messages of each inbound kind that may wait for their consumer; default 256.
        transport: ``"aiomqtt"`` (the default: aiomqtt over paho-mqtt) or ``"native"`` (this library's
            own MQTT on asyncio: no threads, several times faster; no SOCKS proxies), or a transport
            factory -- a callable building one connection from its connect parameters, such as
            :class:`aioiothub.testing.MemoryNetwork`, which reaches an in-process emulator through
            memory.
        liveness_timeout: seconds a PUBACK may be overdue, with nothing else heard from the hub,
            before the client probes the link with a PINGREQ; a probe unanswered for as long again
            means the link is dead and the client reconnects. Default 10.
        will: a :class:`~aioiothub.Message` the hub sends as this identity's telemetry (with the
            application property ``iothub-MessageType: Will``) if the connection drops without the
            client closing it; a clean close or a token-renewal reconnect discards it.
        clean_session: connect with MQTT CleanSession=1: the hub keeps no session between
            connections, so cloud-to-device messages queued while offline are delivered only once
            the client asks for them again (``cloud_messages()``); default ``False`` (the hub
            resumes the session and delivers queued messages at once).
        outbox: an :class:`~aioiothub.Outbox`, or the path of its file (an outbox with the
            default options): ``send_message`` then commits each message to it and returns, and
            the client delivers the file's messages in the background, in order, across outages and
            restarts. ``client.outbox`` is this identity's queue in it. With an outbox (and
            ``reconnect`` on), the client also starts while the hub is unreachable: entering it
            returns once the first attempt fails, and it keeps connecting in the background.
    """

    port: int
    websockets: bool
    proxy: ProxyOptions | None
    ssl_context: ssl.SSLContext | None
    gateway_hostname: str | None
    model_id: str | None
    product_info: str | None
    keepalive: int
    sas_ttl: int
    request_timeout: float
    reconnect: ReconnectPolicy | bool
    max_in_flight: int
    inbound_buffer_size: int
    transport: str | Callable[..., Any]
    liveness_timeout: float
    will: Message | None
    clean_session: bool
    outbox: Outbox | str | os.PathLike[str] | None
