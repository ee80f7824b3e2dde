"""What both transports keep of one connection: :class:`SessionConnection`."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from aioiothub.protocol.mqtt import ClientSession
from aioiothub.transports.base import ConnectParameters, MessageHandler

__all__ = ["SessionConnection"]


class SessionConnection:
    """What both transports keep of one connection: its parameters, its end and the client session.

    The MQTT client role lives in :class:`~aioiothub.protocol.mqtt.ClientSession`; a transport
    drives it and sets ``_entered`` while it is entered.
    """

    def __init__(self, parameters: ConnectParameters, on_message: MessageHandler) -> None:
        self._parameters = parameters
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self._loop.create_future()
        """Completes (with :class:`ConnectionLostError`) when the connection ends for any reason."""
        self._session: ClientSession[asyncio.Future[Any]] = ClientSession(
            keepalive=parameters.keepalive, ping_timeout=parameters.connect_timeout, now=self._loop.time()
        )
        self._entered = False

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._entered:
            return
        self._entered = False
        await self._close()

    async def _close(self) -> None:
        """End the connection: DISCONNECT while it is up, then close, bounded in time and shielded."""
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        """Whether the connection is up (entered, and not lost)."""
        return self._entered and not self.lost.done()

    @property
    def last_received(self) -> float:
        """``loop.time()`` when the last packet arrived from the hub."""
        return self._session.last_received
