"""The service's side of the registry beyond registering: update and delete, and loading a store.

IoT Hub's service REST API (:mod:`aioiothub.emulator.service_api`) deletes and updates identities
with these, and a state directory (:mod:`aioiothub.emulator.storage.state_store`) is loaded with
:func:`restore_state`. Each checks its identity exists and hands the job to the parts of the hub's
:class:`~aioiothub.emulator.hub.core.HubCore` that own it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.hub.identity import Identity, IdentityKey
from aioiothub.emulator.hub.observer import StateObserver
from aioiothub.emulator.hub.queues import CloudMessage
from aioiothub.emulator.hub.values import check_key, check_thumbprint

__all__ = ["RestoredState", "remove_identity", "restore_state", "update_identity"]

RestoredState = tuple[
    Iterable[Identity], Mapping[IdentityKey, Mapping[str, Any]], Iterable[tuple[IdentityKey, CloudMessage]]
]
"""``(identities, twin states by key, queued messages)`` as a store loads them."""


def remove_identity(core: HubCore, device_id: str, module_id: str | None = None) -> list[IdentityKey]:
    """Delete a device (with its modules) or a module: connections closed, twin and queue gone.

    Example:
        >>> from aioiothub.emulator.hub import Hub
        >>> hub = Hub()
        >>> _ = hub.add_device("dev1")
        >>> remove_identity(hub.core, "dev1")
        [('dev1', None)]

    Returns:
        The keys of the identities deleted.

    Raises:
        ValueError: no such identity.
    """
    keys = core.registry.remove(device_id, module_id)
    for key in keys:
        if core.notifications.lifecycle:
            core.notifications.identity_deleted(key, core.twins.state(key))
        core.connections.forget(key, "the identity was deleted")
        core.twins.remove(key)
        core.queues.remove(key)
    return keys

def update_identity(
    core: HubCore,
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
    identity = core.registry.lookup(device_id, module_id)
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
        core.set_device_status(device_id, enabled=enabled)  # saves the change
    else:
        core.registry.changed(identity)
    return identity

def restore_state(core: HubCore, state: RestoredState, observer: StateObserver) -> None:
    """Load identities, twins and queued messages from a store, then report every change to it.

    Call it once, before anything is registered.

    Raises:
        RuntimeError: identities are registered already.
    """
    if core.registry.identities():
        raise RuntimeError("restore_state() must come before any identity is registered")
    identities, twins, messages = state
    for identity in identities:
        core.registry.restore(identity)
        if identity.key in twins:
            core.twins.restore(identity.key, twins[identity.key])
        else:
            core.twins.add(identity.key)
        core.queues.add(identity.key, identity.generation_id)
    known = {identity.key for identity in core.registry.identities()}
    for key, message in messages:
        if key in known:
            core.queues.restore(key, message)
    core.registry.observer = observer
    core.twins.observer = observer
    core.queues.observer = observer
