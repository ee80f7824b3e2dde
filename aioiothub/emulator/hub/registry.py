"""The identity registry: devices and modules, their keys or certificates, the CA the hub trusts, status.

Every other part of the hub finds identities here. Registering an ``"x509"`` identity reports its
self-signed certificate through ``on_self_signed_certificate``, so that a running emulator can add it
to the certificates its TLS listeners accept; ``"x509_ca"`` certificates are issued by
:attr:`Registry.certificate_authority`, which the listeners trust as a whole.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence
from typing import TypeVar

from cryptography import x509

from aioiothub.emulator.certs import (
    CertificateAuthority,
    certificate_thumbprints,
    generate_self_signed_certificate,
)
from aioiothub.emulator.hub.identity import (
    Authentication,
    DeviceIdentity,
    Identity,
    IdentityKey,
    ModuleIdentity,
)
from aioiothub.emulator.hub.observer import NO_OBSERVER, StateObserver
from aioiothub.emulator.hub.values import check_key, check_thumbprint
from aioiothub.protocol.connect import client_id, validate_identity

__all__ = ["Registry"]

_IdentityT = TypeVar("_IdentityT", bound=Identity)


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class Registry:
    """The registered identities of one hub.

    Args:
        hostname: the hub's host name, written into every identity's connection string.
        certificate_authority: the CA that issues ``"x509_ca"`` certificates; generated on first use
            when ``None``.
        on_self_signed_certificate: called with each self-signed certificate registered.
    """

    def __init__(
        self,
        *,
        hostname: str,
        certificate_authority: CertificateAuthority | None,
        on_self_signed_certificate: Callable[[bytes], None],
    ) -> None:
        self._hostname = hostname
        self._certificate_authority = certificate_authority
        self._ca_certificate: x509.Certificate | None = None
        self._on_self_signed_certificate = on_self_signed_certificate
        self._identities: dict[IdentityKey, Identity] = {}
        #: Told of every durable change (see :mod:`aioiothub.emulator.storage.state_store`).
        self.observer: StateObserver = NO_OBSERVER

    @property
    def hostname(self) -> str:
        """The hub's host name."""
        return self._hostname

    @property
    def certificate_authority(self) -> CertificateAuthority:
        """The CA that issues certificates for ``"x509_ca"`` identities."""
        if self._certificate_authority is None:
            self._certificate_authority = CertificateAuthority.generate()
        return self._certificate_authority

    def ca_certificate(self) -> x509.Certificate:
        """:attr:`certificate_authority`'s certificate, parsed once, to verify client certificates with."""
        if self._ca_certificate is None:
            self._ca_certificate = x509.load_pem_x509_certificate(self.certificate_authority.certificate_pem)
        return self._ca_certificate

    # --- registering -------------------------------------------------------------------------------

    def add_device(
        self,
        device_id: str,
        authentication: Authentication,
        primary_key: str | None,
        secondary_key: str | None,
        certificate_pem: bytes | None,
        *,
        thumbprints: Sequence[str] | None = None,
    ) -> DeviceIdentity:
        """Register a device (see :meth:`Hub.add_device <aioiothub.emulator.Hub.add_device>`).

        ``thumbprints`` registers an ``"x509"`` device by certificate thumbprints alone, as the
        service API does; the hub then holds no certificate of it.
        """
        validate_identity(device_id, "device_id")
        return self._create(
            DeviceIdentity, device_id, None, authentication, primary_key, secondary_key, certificate_pem, thumbprints
        )

    def add_module(
        self,
        device_id: str,
        module_id: str,
        authentication: Authentication,
        primary_key: str | None,
        secondary_key: str | None,
        certificate_pem: bytes | None,
        *,
        thumbprints: Sequence[str] | None = None,
    ) -> ModuleIdentity:
        """Register a module of a registered device (see :meth:`Hub.add_module <aioiothub.emulator.Hub.add_module>`)."""
        self.lookup(device_id)
        validate_identity(module_id, "module_id")
        return self._create(
            ModuleIdentity,
            device_id,
            module_id,
            authentication,
            primary_key,
            secondary_key,
            certificate_pem,
            thumbprints,
        )

    def _create(
        self,
        kind: type[_IdentityT],
        device_id: str,
        module_id: str | None,
        authentication: Authentication,
        primary_key: str | None,
        secondary_key: str | None,
        certificate_pem: bytes | None,
        thumbprints: Sequence[str] | None = None,
    ) -> _IdentityT:
        key = (device_id, module_id)
        if key in self._identities:
            argument = "device_id" if module_id is None else "module_id"
            raise ValueError(f"{argument}: {client_id(device_id, module_id)!r} is already registered")
        if authentication not in ("sas", "x509", "x509_ca"):
            raise ValueError(f"authentication must be 'sas', 'x509' or 'x509_ca', got {authentication!r}")
        if authentication != "sas" and (primary_key is not None or secondary_key is not None):
            raise ValueError("primary_key/secondary_key are only for authentication='sas'")
        if authentication != "x509" and (certificate_pem is not None or thumbprints is not None):
            raise ValueError("certificate_pem and thumbprints are only for authentication='x509'")
        if certificate_pem is not None and thumbprints is not None:
            raise ValueError("give certificate_pem or thumbprints, not both")
        identity: _IdentityT
        if authentication == "sas":
            for argument, value in (("primary_key", primary_key), ("secondary_key", secondary_key)):
                if value is not None:
                    check_key(value, argument)
            identity = kind(
                hostname=self._hostname,
                device_id=device_id,
                module_id=module_id,
                authentication="sas",
                primary_key=primary_key or _new_key(),
                secondary_key=secondary_key or _new_key(),
            )
        elif thumbprints is not None:
            prints = frozenset(check_thumbprint(value) for value in thumbprints)
            if not prints:
                raise ValueError("thumbprints: give at least one certificate thumbprint")
            identity = kind(
                hostname=self._hostname,
                device_id=device_id,
                module_id=module_id,
                authentication="x509",
                thumbprints=prints,
            )
        else:
            label = client_id(device_id, module_id)
            private_key_pem: bytes | None = None
            if authentication == "x509_ca":
                certificate_pem, private_key_pem = self.certificate_authority.issue_client_certificate(label)
            elif certificate_pem is None:
                certificate_pem, private_key_pem = generate_self_signed_certificate(label)
            identity = kind(
                hostname=self._hostname,
                device_id=device_id,
                module_id=module_id,
                authentication=authentication,
                certificate_pem=certificate_pem,
                private_key_pem=private_key_pem,
                thumbprints=frozenset(certificate_thumbprints(certificate_pem)),
            )
            if authentication == "x509":
                self._on_self_signed_certificate(certificate_pem)
        self._identities[key] = identity
        self.observer.identity_saved(identity)
        return identity

    def restore(self, identity: Identity) -> None:
        """Put back an identity loaded from a store (its self-signed certificate is trusted again)."""
        self._identities[identity.key] = identity
        if identity.authentication == "x509" and identity.certificate_pem is not None:
            self._on_self_signed_certificate(identity.certificate_pem)

    def changed(self, identity: Identity) -> None:
        """Record a change made to a registered identity's entry: a new revision, saved."""
        identity.revision += 1
        self.observer.identity_saved(identity)

    def remove(self, device_id: str, module_id: str | None = None) -> list[IdentityKey]:
        """Delete an identity; deleting a device deletes its modules too.

        Returns:
            The keys of every identity removed, the device's last.

        Raises:
            ValueError: no such identity.
        """
        self.lookup(device_id, module_id)
        keys: list[IdentityKey]
        if module_id is not None:
            keys = [(device_id, module_id)]
        else:
            keys = [key for key in self._identities if key[0] == device_id and key[1] is not None]
            keys.append((device_id, None))
        for key in keys:
            del self._identities[key]
            self.observer.identity_removed(key)
        return keys

    # --- finding -----------------------------------------------------------------------------------

    def get(self, device_id: str, module_id: str | None = None) -> Identity | None:
        """The registered identity, or ``None``."""
        return self._identities.get((device_id, module_id))

    def lookup(self, device_id: str, module_id: str | None = None) -> Identity:
        """The registered identity.

        Raises:
            ValueError: no such identity; the message names ``device_id`` or ``module_id``.
        """
        identity = self._identities.get((device_id, module_id))
        if identity is None:
            argument = "device_id" if module_id is None else "module_id"
            raise ValueError(f"{argument}: {client_id(device_id, module_id)!r} is not registered")
        return identity

    def identities(self) -> list[Identity]:
        """Every registered device and module, in registration order."""
        return list(self._identities.values())

    # --- status ------------------------------------------------------------------------------------

    def set_device_status(self, device_id: str, *, enabled: bool) -> None:
        """Enable or disable a device (its modules follow it at CONNECT; see :mod:`.admission`).

        Raises:
            ValueError: the device is not registered.
        """
        identity = self.lookup(device_id)
        identity.set_enabled(enabled)
        self.changed(identity)
