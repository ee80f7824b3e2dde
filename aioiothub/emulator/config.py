"""The emulator's configuration file (``--config FILE``): devices, modules, twins, policies, enrollments.

TOML (``.toml``) or JSON (any other name), the same shape either way::

    hostname = "localhost"                      # optional

    [[policies]]                                # added to (or replacing) the standard ones
    name = "backend"
    primary_key = "…base64…"                    # optional: generated when missing
    rights = ["ServiceConnect", "RegistryRead"]

    [[devices]]
    id = "thermostat-1"
    authentication = "sas"                      # or "x509" (with thumbprints) or "x509_ca"
    primary_key = "…base64…"                    # optional
    enabled = true
    tags = { site = "b1" }
    desired = { interval = 5 }

    [[devices.modules]]
    id = "filter"
    desired = { threshold = 3 }

    [[enrollment_groups]]                       # passed to hub.dps.add_enrollment_group(name, **rest)
    name = "factory"

Every mistake is a :class:`ConfigError` naming the file and the entry.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aioiothub.emulator.hub import Hub
from aioiothub.emulator.hub.identity import Authentication
from aioiothub.emulator.hub.management import update_identity
from aioiothub.emulator.service_api import SharedAccessPolicy, generated_policies

__all__ = ["ConfigError", "EmulatorConfig", "IdentityConfig", "load_config"]

_IDENTITY_KEYS: Final = frozenset(
    {"id", "authentication", "primary_key", "secondary_key", "thumbprints", "enabled", "iot_edge", "tags", "desired"}
)


class ConfigError(ValueError):
    """The configuration file cannot be read or does not make sense."""


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """A device or module to register, with its twin."""

    device_id: str
    module_id: str | None = None
    authentication: Authentication = "sas"
    primary_key: str | None = None
    secondary_key: str | None = None
    thumbprints: tuple[str, ...] | None = None
    enabled: bool = True
    iot_edge: bool = False
    tags: Mapping[str, Any] = field(default_factory=dict)
    desired: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """What a configuration file asks for."""

    hostname: str | None = None
    identities: tuple[IdentityConfig, ...] = ()
    policies: tuple[SharedAccessPolicy, ...] = ()
    enrollment_groups: tuple[Mapping[str, Any], ...] = ()

    async def apply(self, hub: Hub, *, identities: bool = True) -> list[IdentityConfig]:
        """Register the identities that ``hub`` does not know yet, and the enrollment groups.

        Args:
            hub: the hub to configure.
            identities: ``False`` applies only the enrollment groups (a state directory holds the
                identities already).

        Returns:
            The identities registered now.

        Raises:
            ConfigError: an identity or twin the hub refuses, or enrollments without DPS.
        """
        added: list[IdentityConfig] = []
        known = {identity.key for identity in hub.identities()}
        for entry in self.identities if identities else ():
            if (entry.device_id, entry.module_id) in known:
                continue
            where = entry.device_id if entry.module_id is None else f"{entry.device_id}/{entry.module_id}"
            try:
                options: dict[str, Any] = {
                    "authentication": entry.authentication,
                    "primary_key": entry.primary_key,
                    "secondary_key": entry.secondary_key,
                    "thumbprints": entry.thumbprints,
                }
                if entry.module_id is None:
                    hub.add_device(entry.device_id, **options)
                    update_identity(hub.core, entry.device_id, enabled=entry.enabled, iot_edge=entry.iot_edge)
                else:
                    hub.add_module(entry.device_id, entry.module_id, **options)
                if entry.tags or entry.desired:
                    await hub.update_twin(
                        entry.device_id, module_id=entry.module_id, tags=entry.tags, desired=entry.desired
                    )
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"identity {where!r}: {exc}") from None
            added.append(entry)
        if self.enrollment_groups:
            dps = getattr(hub, "dps", None)
            if dps is None:
                raise ConfigError("enrollment_groups: this emulator has no Device Provisioning Service")
            for group in self.enrollment_groups:
                options = {name: value for name, value in group.items() if name != "name"}
                try:
                    dps.add_enrollment_group(group["name"], **options)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"enrollment group {group['name']!r}: {exc}") from None
        return added


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table/object, got {type(value).__name__}")
    return value


def _list(document: dict[str, Any], name: str, where: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise ConfigError(f"{where}{name} must be a list")
    return value


def _identity(entry: dict[str, Any], where: str, device_id: str | None) -> IdentityConfig:
    unknown = set(entry) - _IDENTITY_KEYS - ({"modules"} if device_id is None else set())
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    identifier = entry.get("id")
    if not isinstance(identifier, str) or not identifier:
        raise ConfigError(f"{where}: 'id' must be a non-empty string")
    authentication = entry.get("authentication", "sas")
    if authentication not in ("sas", "x509", "x509_ca"):
        raise ConfigError(f"{where}: authentication must be 'sas', 'x509' or 'x509_ca'")
    thumbprints = entry.get("thumbprints")
    if thumbprints is not None and (
        not isinstance(thumbprints, list) or not all(isinstance(value, str) for value in thumbprints)
    ):
        raise ConfigError(f"{where}: thumbprints must be a list of strings")
    if authentication == "x509" and not thumbprints:
        raise ConfigError(f"{where}: an 'x509' identity needs its certificate's thumbprints")
    for name in ("tags", "desired"):
        _table(entry.get(name, {}), f"{where}.{name}")
    for name in ("enabled", "iot_edge"):
        if not isinstance(entry.get(name, False), bool):
            raise ConfigError(f"{where}: {name} must be true or false")
    return IdentityConfig(
        device_id=device_id if device_id is not None else identifier,
        module_id=identifier if device_id is not None else None,
        authentication=authentication,
        primary_key=entry.get("primary_key"),
        secondary_key=entry.get("secondary_key"),
        thumbprints=tuple(thumbprints) if thumbprints is not None else None,
        enabled=entry.get("enabled", True),
        iot_edge=entry.get("iot_edge", False),
        tags=entry.get("tags", {}),
        desired=entry.get("desired", {}),
    )


def _policy(entry: dict[str, Any], where: str) -> SharedAccessPolicy:
    fallback = generated_policies()[0]
    rights = entry.get("rights")
    if not isinstance(rights, list) or not all(isinstance(value, str) for value in rights):
        raise ConfigError(f"{where}: rights must be a list of names")
    try:
        return SharedAccessPolicy(
            entry.get("name", ""),
            entry.get("primary_key", fallback.primary_key),
            entry.get("secondary_key", fallback.secondary_key),
            frozenset(rights),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | os.PathLike[str]) -> EmulatorConfig:
    """Read and check a configuration file.

    Raises:
        ConfigError: the file cannot be read, is not TOML/JSON, or describes something invalid.
    """
    file = Path(path)
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {file}: {exc.strerror or exc}") from None
    try:
        document = tomllib.loads(text.decode("utf-8")) if file.suffix == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if file.suffix == ".toml" else "JSON"
        raise ConfigError(f"{file} is not valid {kind}: {exc}") from None
    document = _table(document, str(file))
    unknown = set(document) - {"hostname", "devices", "policies", "enrollment_groups"}
    if unknown:
        raise ConfigError(f"{file}: unknown keys {sorted(unknown)}")
    hostname = document.get("hostname")
    if hostname is not None and not isinstance(hostname, str):
        raise ConfigError(f"{file}: hostname must be a string")
    identities: list[IdentityConfig] = []
    for index, raw in enumerate(_list(document, "devices", f"{file}: ")):
        where = f"{file}: devices[{index}]"
        device = _identity(_table(raw, where), where, None)
        identities.append(device)
        for module_index, module in enumerate(_list(raw, "modules", f"{where}.")):
            module_where = f"{where}.modules[{module_index}]"
            identities.append(_identity(_table(module, module_where), module_where, device.device_id))
    policies = tuple(
        _policy(_table(raw, f"{file}: policies[{index}]"), f"{file}: policies[{index}]")
        for index, raw in enumerate(_list(document, "policies", f"{file}: "))
    )
    groups = []
    for index, raw in enumerate(_list(document, "enrollment_groups", f"{file}: ")):
        group = _table(raw, f"{file}: enrollment_groups[{index}]")
        if not isinstance(group.get("name"), str):
            raise ConfigError(f"{file}: enrollment_groups[{index}] needs a 'name'")
        groups.append(group)
    return EmulatorConfig(hostname, tuple(identities), policies, tuple(groups))
