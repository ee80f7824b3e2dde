"""The service's side of the registry beyond registering: update, delete, twin tags, feedback, a store.

:class:`ManagedHub` is the :class:`~aioiothub.emulator.hub.Hub` that IoT Hub's service REST API
(:mod:`aioiothub.emulator.service_api`) drives, and that a state directory
(:mod:`aioiothub.emulator.store`) keeps across restarts. Each method checks its identity exists and
hands the job to the part that owns it, as the facade does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aioiothub.emulator.hub.facade import Hub
from aioiothub.emulator.hub.identity import Identity, IdentityKey
from aioiothub.emulator.hub.observer import StateObserver
from aioiothub.emulator.hub.queues import CloudMessage, FeedbackRecord
from aioiothub.emulator.hub.values import check_key, check_thumbprint

__all__ = ["ManagedHub", "RestoredState"]

RestoredState = tuple[
    Iterable[Identity], Mapping[IdentityKey, Mapping[str, Any]], Iterable[tuple[IdentityKey, CloudMessage]]
]
"""``(identities, twin states by key, queued messages)`` as a store loads them."""


class ManagedHub(Hub):
    """A :class:`Hub` with the whole registry life cycle (see the module docstring)."""

    # --- identities ----------------------------------------------------------------------------

    def remove_identity(self, device_id: str, module_id: str | None = None) -> list[IdentityKey]:
        """Delete a device (with its modules) or a module: connections closed, twin and queue gone.

        Example:
            >>> hub = ManagedHub()
            >>> _ = hub.add_device("dev1")
            >>> hub.remove_identity("dev1")
            [('dev1', None)]

        Returns:
            The keys of the identities deleted.

        Raises:
            ValueError: no such identity.
        """
        keys = self._registry.remove(device_id, module_id)
        for key in keys:
            self._connections.forget(key, "the identity was deleted")
            self._twins.remove(key)
            self._queues.remove(key)
        return keys

    def update_identity(
        self,
        device_id: str,
        module_id: str | None = None,
        *,
        enabled: bool | None = None,
        status_reason: str | None = None,
        primary_key: str | None = None,
        secondary_key: str | None = None,
        thumbprints: Sequence[str] | None = None,
        iot_edge: bool | None = None,
        managed_by: str | None = None,
    ) -> Identity:
        """Change a registry entry; ``None`` leaves a field as it is.

        Keys apply to SAS identities and thumbprints to ``"x509"`` ones; disabling a device closes
        its connections and those of its modules.

        Raises:
            ValueError: no such identity, or a value that does not fit it.
        """
        identity = self._registry.lookup(device_id, module_id)
        if enabled is not None and module_id is not None:
            raise ValueError("enabled: a module has no status of its own; change its device's")
        if (primary_key or secondary_key) and identity.authentication != "sas":
            raise ValueError(f"{identity.label} uses {identity.authentication}, not shared access keys")
        if thumbprints is not None and identity.authentication != "x509":
            raise ValueError(f"{identity.label} uses {identity.authentication}, not certificate thumbprints")
        for argument, value in (("primary_key", primary_key), ("secondary_key", secondary_key)):
            if value:
                check_key(value, argument)
        prints = frozenset(check_thumbprint(value) for value in thumbprints) if thumbprints is not None else None
        if primary_key:
            identity.primary_key = primary_key
        if secondary_key:
            identity.secondary_key = secondary_key
        if prints:
            identity.thumbprints = prints
        if iot_edge is not None:
            identity.iot_edge = bool(iot_edge)
        if managed_by is not None:
            identity.managed_by = managed_by
        if status_reason is not None:
            identity.status_reason = status_reason
        if enabled is not None:
            self.set_device_status(device_id, enabled=enabled)  # saves the change
        else:
            self._registry.changed(identity)
        return identity

    # --- twins as the service sees them --------------------------------------------------------

    def twin_state(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """The whole twin: ``tags``, ``desired``, ``reported``, ``desired_version``, ``reported_version``
        and the twin ``version`` (bumped by every change).

        Raises:
            ValueError: no such identity.
        """
        return self._twins.state(self._registry.lookup(device_id, module_id).key)

    async def update_twin(
        self,
        device_id: str,
        *,
        module_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        desired: Mapping[str, Any] | None = None,
    ) -> None:
        """Merge-patch the twin's tags and desired properties; the device hears of a desired change.

        Raises:
            ValueError: no such identity, or a patch breaks the twin rules (nothing changes then).
        """
        await self._twins.update(self._registry.lookup(device_id, module_id), tags=tags, desired=desired)

    async def replace_twin(
        self,
        device_id: str,
        *,
        module_id: str | None = None,
        tags: Mapping[str, Any],
        desired: Mapping[str, Any],
    ) -> None:
        """Replace the twin's tags and desired properties; the device is sent what changed.

        Raises:
            ValueError: no such identity, or a section breaks the twin rules (nothing changes then).
        """
        await self._twins.replace(self._registry.lookup(device_id, module_id), tags=tags, desired=desired)

    # --- cloud-to-device feedback --------------------------------------------------------------

    def feedback(self, device_id: str | None = None) -> list[FeedbackRecord]:
        """Feedback on cloud-to-device messages sent with ``ack`` (the latest 1000), oldest first.

        Example:
            >>> [record.status for record in hub.feedback("dev1")]  # doctest: +SKIP
            ['Success']
        """
        return self._queues.feedback(device_id)

    async def wait_for_feedback(
        self,
        count: int = 1,
        device_id: str | None = None,
        *,
        timeout: float = 10,  # noqa: ASYNC109 - a test helper's deadline, as in the documented API
    ) -> list[FeedbackRecord]:
        """Wait until at least ``count`` feedback records match, and return them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        return await self._queues.wait_feedback(count, device_id, timeout)

    # --- persistence ---------------------------------------------------------------------------

    def restore_state(self, state: RestoredState, observer: StateObserver) -> None:
        """Load identities, twins and queued messages from a store, then report every change to it.

        Call it once, before anything is registered.

        Raises:
            RuntimeError: identities are registered already.
        """
        if self._registry.identities():
            raise RuntimeError("restore_state() must come before any identity is registered")
        identities, twins, messages = state
        for identity in identities:
            self._registry.restore(identity)
            if identity.key in twins:
                self._twins.restore(identity.key, twins[identity.key])
            else:
                self._twins.add(identity.key)
            self._queues.add(identity.key)
        known = {identity.key for identity in self._registry.identities()}
        for key, message in messages:
            if key in known:
                self._queues.restore(key, message)
        self._registry.observer = observer
        self._twins.observer = observer
        self._queues.observer = observer
