"""What the hub's parts report when their durable state changes, for a store to write through.

The registry, the twins and the cloud queues call a :class:`StateObserver` after every change that
should survive a restart (see :mod:`aioiothub.emulator.storage.state_store`). Without a state directory the
observer is :data:`NO_OBSERVER`, which does nothing, so the in-memory hub behaves exactly as before.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from aioiothub.emulator.hub.identity import Identity, IdentityKey

__all__ = ["NO_OBSERVER", "StateObserver"]


class StateObserver(Protocol):
    """Receives each durable change right after the hub made it."""

    def identity_saved(self, identity: Identity) -> None:
        """An identity was registered or its registry entry changed."""

    def identity_removed(self, key: IdentityKey) -> None:
        """An identity was deleted, with its twin and queued messages."""

    def twin_saved(self, key: IdentityKey, state: dict[str, Any]) -> None:
        """An identity's twin changed; ``state`` is its whole stored form."""

    def message_queued(self, key: IdentityKey, message: Any) -> None:
        """A cloud message was queued for the identity."""

    def message_removed(self, key: IdentityKey, message: Any) -> None:
        """A queued cloud message was acknowledged or expired."""


class _NoObserver:
    __slots__ = ()

    def identity_saved(self, identity: Identity) -> None:
        pass

    def identity_removed(self, key: IdentityKey) -> None:
        pass

    def twin_saved(self, key: IdentityKey, state: dict[str, Any]) -> None:
        pass

    def message_queued(self, key: IdentityKey, message: Any) -> None:
        pass

    def message_removed(self, key: IdentityKey, message: Any) -> None:
        pass


NO_OBSERVER: Final[StateObserver] = _NoObserver()
"""The observer of a hub without a state directory: it does nothing."""
