"""The emulator's AMQP surface: the AMQPS listener (and an optional plain one) and what it serves.

:class:`AmqpSurface` is composed into the running :class:`~aioiothub.emulator.Emulator` beside the
MQTT and HTTPS surfaces. It listens on 5671 when that port is free (azure-eventhub and uamqp connect
nowhere else over TLS) and on a free port otherwise, optionally also on a plain-AMQP port for
clients configured for a development emulator (``UseDevelopmentEmulator=true``), and serves every
connection with an :class:`~aioiothub.emulator.amqp.connection.AmqpConnection`.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import logging
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio.abc

from aioiothub.emulator.hub.core import HubCore

if TYPE_CHECKING:
    from aioiothub.emulator.amqp.nodes import Owners
from aioiothub.emulator.listeners import PeerInfo, serve_tcp, serve_tls
from aioiothub.emulator.service_api.policies import SharedAccessPolicy

__all__ = ["AMQPS_PORT", "AmqpPort", "AmqpSurface", "check_amqp_port"]

logger = logging.getLogger("aioiothub.emulator")

INSTALL_HINT: Final = "the AMQP endpoint needs python-qpid-proton: pip install 'aioiothub[amqp]'"

AMQPS_PORT: Final = 5671
"""The AMQPS port; the SDKs that read the Event Hubs-compatible endpoint over TLS use no other."""

AmqpPort = int | Literal["auto"] | None
"""A port to listen on: a number (0 picks a free one), ``"auto"`` (5671 when free, else a free one)
or ``None`` (no listener)."""


def check_amqp_port(value: object, argument: str) -> None:
    """Raise :class:`ValueError` naming ``argument`` unless ``value`` is an :data:`AmqpPort`."""
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{argument} must be an int between 0 and 65535, 'auto' or None, got {value!r}")


class AmqpSurface:
    """The AMQP listeners of one emulator (see the module docstring)."""

    def __init__(
        self,
        core: HubCore,
        policies: Sequence[SharedAccessPolicy],
        *,
        hostname: str,
        event_hub_name: str,
        tls_port: AmqpPort,
        plain_port: AmqpPort,
    ) -> None:
        check_amqp_port(tls_port, "amqp_port")
        check_amqp_port(plain_port, "amqp_plain_port")
        self._core = core
        self._policies = policies
        self._hostname = hostname
        self.event_hub_name = event_hub_name
        if importlib.util.find_spec("proton") is None:
            if tls_port not in ("auto", None) or plain_port is not None:
                raise RuntimeError(INSTALL_HINT)
            tls_port = None
            self.unavailable: str | None = INSTALL_HINT
        else:
            self.unavailable = None
        self._requested = (tls_port, plain_port)
        self.tls_port: int | None = None
        self.plain_port: int | None = None
        self._owners: Owners | None = None

    async def start(self, task_group: anyio.abc.TaskGroup, *, host: str, ssl_context: ssl.SSLContext) -> None:
        """Start the listeners in ``task_group``."""
        tls_port, plain_port = self._requested
        if self.unavailable is not None:
            logger.info("%s; it is off", self.unavailable)
        if tls_port is not None:
            self.tls_port = await self._listen(
                task_group, functools.partial(serve_tls, ssl_context=ssl_context), host, tls_port, "AMQPS"
            )
        if plain_port is not None:
            self.plain_port = await self._listen(task_group, serve_tcp, host, plain_port, "AMQP")

    async def _listen(
        self,
        task_group: anyio.abc.TaskGroup,
        serve: Callable[..., Coroutine[Any, Any, None]],
        host: str,
        port: int | Literal["auto"],
        what: str,
    ) -> int:
        candidates = [AMQPS_PORT if what == "AMQPS" else 5672, 0] if port == "auto" else [port]
        for index, candidate in enumerate(candidates):
            try:
                started: int = await task_group.start(
                    functools.partial(serve, self._serve, host=host, port=candidate),
                    name=f"emulator {what} listener on {host}:{candidate}",
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or index == len(candidates) - 1:
                    raise
                continue
            return started
        raise AssertionError("unreachable")

    def event_hub_connection_string(self, policy_name: str = "service", *, plain: bool = False) -> str:
        """The built-in endpoint's connection string for ``azure-eventhub``, signed by a policy's key.

        ``Endpoint=sb://{host}/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath={event hub}``,
        for the AMQPS listener (port 5671, which azure-eventhub assumes); with ``plain``, for the
        plain-AMQP listener, with its port and ``UseDevelopmentEmulator=true``.

        Raises:
            ValueError: no such policy.
            RuntimeError: the listener asked for is not running.
        """
        policy = next((policy for policy in self._policies if policy.name == policy_name), None)
        if policy is None:
            raise ValueError(f"policy_name: no shared access policy named {policy_name!r}")
        port = self.plain_port if plain else self.tls_port
        if port is None:
            raise RuntimeError(f"the {'plain AMQP' if plain else 'AMQPS'} listener is not running")
        if not plain and port != AMQPS_PORT:
            raise RuntimeError(f"the AMQPS listener is on {port}, not {AMQPS_PORT}: azure-eventhub cannot reach it")
        host = f"{self._hostname}:{port}" if plain else self._hostname
        extra = ";UseDevelopmentEmulator=true" if plain else ""
        return (
            f"Endpoint=sb://{host}/;SharedAccessKeyName={policy.name};SharedAccessKey={policy.primary_key};"
            f"EntityPath={self.event_hub_name}{extra}"
        )

    def stop(self) -> None:
        """Forget the ports (the listeners end with the emulator's task group)."""
        self.tls_port = None
        self.plain_port = None

    async def _serve(self, stream: anyio.abc.ByteStream, peer: PeerInfo) -> None:
        # Imported here: without the optional AMQP engine the rest of the emulator works as before.
        from aioiothub.emulator.amqp.connection import AmqpConnection
        from aioiothub.emulator.amqp.nodes import Owners

        if self._owners is None:
            self._owners = Owners()
        await AmqpConnection(
            self._core,
            self._policies,
            stream,
            peer,
            hostname=self._hostname,
            event_hub_name=self.event_hub_name,
            owners=self._owners,
            amqps_port=self.tls_port or AMQPS_PORT,
        ).run()
