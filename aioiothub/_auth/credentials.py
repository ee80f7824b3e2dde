"""Credentials a client authenticates with: a shared access key, a SAS token, or an X.509 certificate.

Example:
    >>> credential = SharedAccessKeyCredential("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", ttl=600)
    >>> credential
    SharedAccessKeyCredential(key='<redacted>', ttl=600, policy_name=None)

The SAS helpers of :mod:`aioiothub.protocol.sas` and :class:`ConnectionString` are re-exported here.
"""

from __future__ import annotations

import inspect
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from aioiothub.exceptions import CredentialError
from aioiothub.protocol.connection_string import ConnectionString
from aioiothub.protocol.sas import (
    SasToken,
    decode_key,
    derive_device_key,
    format_expiry,
    generate_sas_token,
    parse_sas_token,
    verify_sas_token,
)

__all__ = [
    "ConnectionString",
    "Credential",
    "SasToken",
    "SasTokenCredential",
    "SasTokenGrant",
    "SharedAccessKeyCredential",
    "TokenCredential",
    "X509Credential",
    "derive_device_key",
    "generate_sas_token",
    "parse_sas_token",
    "verify_sas_token",
]

_REDACTED = "'<redacted>'"


@dataclass(frozen=True, slots=True)
class SasTokenGrant:
    """A SAS token to send as the MQTT password, and when it stops being valid.

    Attributes:
        token: the token text.
        expiry: its expiry in Unix seconds; the client renews before this moment.
    """

    token: str
    expiry: int

    def __repr__(self) -> str:
        return f"SasTokenGrant(token={_REDACTED}, expiry={self.expiry!r})"


class TokenCredential(Protocol):
    """Anything that hands out SAS tokens: a key, a token from elsewhere, a signing service.

    The session asks for a token before every connection, with ``fresh=True`` when it reconnects
    because the current token is due for renewal.
    """

    @property
    def renewable(self) -> bool:
        """Whether a new token can be had before the current one expires."""
        ...

    async def get_token(self, resource_uri: str, now: float, *, fresh: bool = False) -> SasTokenGrant:
        """A token for ``resource_uri``; a new one (where possible) when ``fresh`` is true."""
        ...


class SharedAccessKeyCredential:
    """Signs a fresh SAS token with a shared access key whenever one is needed.

    Example:
        >>> import asyncio
        >>> credential = SharedAccessKeyCredential("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=")
        >>> grant = asyncio.run(credential.get_token("hub/devices/d1", now=1000.5))
        >>> grant.expiry
        4600

    Args:
        key: the base64 device, module or enrollment key.
        ttl: lifetime of each token in seconds (a positive int).
        policy_name: the ``skn`` field, for policy keys (DPS enrollment groups use ``"registration"``).

    Raises:
        TypeError: ``key`` is not a string.
        ValueError: ``ttl`` is not a positive int.
        CredentialError: ``key`` is not valid base64.
    """

    __slots__ = ("_key", "_policy_name", "_ttl")

    def __init__(self, key: str, *, ttl: int = 3600, policy_name: str | None = None) -> None:
        decode_key(key)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise ValueError(f"ttl must be a positive int (seconds), got {ttl!r}")
        if policy_name is not None and (not isinstance(policy_name, str) or not policy_name):
            raise ValueError(f"policy_name must be a non-empty str or None, got {policy_name!r}")
        self._key = key
        self._ttl = ttl
        self._policy_name = policy_name

    @property
    def ttl(self) -> int:
        """Lifetime of each token in seconds."""
        return self._ttl

    @property
    def policy_name(self) -> str | None:
        """The ``skn`` field added to each token, if any."""
        return self._policy_name

    @property
    def renewable(self) -> bool:
        """Always ``True``: a new token can be signed at any time."""
        return True

    async def get_token(self, resource_uri: str, now: float, *, fresh: bool = False) -> SasTokenGrant:
        """Sign a token for ``resource_uri`` valid until ``int(now) + ttl``.

        Args:
            resource_uri: the scope, e.g. ``myhub.azure-devices.net/devices/dev1``.
            now: the current time in Unix seconds.
            fresh: accepted for :class:`TokenCredential`; every token signed here is new.

        Returns:
            The token and its expiry.
        """
        expiry = int(now) + self._ttl
        token = generate_sas_token(resource_uri, self._key, expiry, self._policy_name)
        return SasTokenGrant(token, expiry)

    def __repr__(self) -> str:
        return (
            f"SharedAccessKeyCredential(key={_REDACTED}, ttl={self._ttl!r}, "
            f"policy_name={self._policy_name!r})"
        )


class SasTokenCredential:
    """Uses a SAS token created elsewhere, and optionally asks for a new one when it expires.

    Example:
        >>> import asyncio
        >>> token = generate_sas_token("hub/devices/d1", "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", 2000)
        >>> credential = SasTokenCredential(token)
        >>> asyncio.run(credential.get_token("hub/devices/d1", now=1000)).expiry
        2000

    Args:
        token: the SAS token text.
        renew: called without arguments when a new token is needed (the current one expired, or
            the client is renewing it ahead of expiry); returns a new token, directly or as an
            awaitable. Exceptions it raises propagate unchanged. Callers that
            share one credential between concurrent connects may see it called once by each.

    Raises:
        TypeError: ``renew`` is not callable.
        CredentialError: ``token`` is malformed.
    """

    __slots__ = ("_renew", "_token", "_token_text")

    def __init__(self, token: str, *, renew: Callable[[], str | Awaitable[str]] | None = None) -> None:
        if renew is not None and not callable(renew):
            raise TypeError(f"renew must be callable or None, not {type(renew).__name__}")
        self._token = parse_sas_token(token)
        self._token_text = token
        self._renew = renew

    @property
    def renewable(self) -> bool:
        """Whether a fresh token can be obtained once the current one expires."""
        return self._renew is not None

    @property
    def expiry(self) -> int:
        """Expiry of the current token in Unix seconds."""
        return self._token.expiry

    async def get_token(self, resource_uri: str, now: float, *, fresh: bool = False) -> SasTokenGrant:
        """Return the current token while it is valid (``expiry > now``), else a renewed one.

        The token's own scope is used as it is; ``resource_uri`` is accepted for interface parity
        with :class:`SharedAccessKeyCredential` and not checked (the hub checks it).

        Args:
            resource_uri: the scope the connection needs.
            now: the current time in Unix seconds.
            fresh: ask ``renew`` for a new token even though the current one is still valid (the
                client renews ahead of expiry); without ``renew`` the current token is returned.

        Returns:
            The token and its expiry.

        Raises:
            CredentialError: the token has expired and no ``renew`` was given, or ``renew``
                returned something that is not a valid, unexpired token.
        """
        if self._token.expiry > now and not (fresh and self._renew is not None):
            return SasTokenGrant(self._token_text, self._token.expiry)
        if self._renew is None:
            raise CredentialError(
                f"the SAS token expired at {format_expiry(self._token.expiry)} and no renewal was given: "
                "pass renew_sas_token= to the client (renew= to a SasTokenCredential), or push a new "
                "token with update_sas_token()"
            )
        result = self._renew()
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, str):
            raise CredentialError(f"renew() returned {type(result).__name__}, not a SAS token string")
        try:
            token = parse_sas_token(result)
        except CredentialError as exc:
            raise CredentialError(f"renew() returned an invalid token: {exc}") from None
        if token.expiry <= now:
            raise CredentialError(f"renew() returned a token that expired at {format_expiry(token.expiry)}")
        self._token = token
        self._token_text = result
        return SasTokenGrant(result, token.expiry)

    def __repr__(self) -> str:
        return (
            f"SasTokenCredential(token={_REDACTED}, expiry={self._token.expiry!r}, "
            f"renewable={self.renewable!r})"
        )


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CredentialError(f"cannot read {what} file {path!r}: {exc.strerror or exc}") from None


def _load_private_key(data: bytes, password: bytes | None, key_file: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password)
    except TypeError:
        # cryptography raises TypeError for a password/encryption mismatch in either direction.
        if password is None:
            raise CredentialError(f"key file {key_file!r} is encrypted and no passphrase was given") from None
        # A passphrase for an unencrypted key is harmless; ssl ignores it too.
        return _load_private_key(data, None, key_file)
    except ValueError:
        if password is not None and b"ENCRYPTED" in data:
            raise CredentialError(f"cannot decrypt key file {key_file!r}: wrong passphrase") from None
        raise CredentialError(f"key file {key_file!r} does not contain a PEM private key") from None
    except UnsupportedAlgorithm:
        raise CredentialError(f"key file {key_file!r} holds a key type this system cannot load") from None


def _public_der(owner: PrivateKeyTypes | x509.Certificate) -> bytes:
    return owner.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class X509Credential:
    """A client certificate and its private key, loaded and checked eagerly.

    Example:
        >>> credential = X509Credential("device.pem", "device.key")  # doctest: +SKIP
        >>> credential.thumbprint_sha256  # doctest: +SKIP
        '5F1C...'
        >>> credential.load_into(ssl_context)  # doctest: +SKIP

    Args:
        certificate_file: PEM file with the device certificate, optionally followed by its chain.
        key_file: PEM file with the private key.
        passphrase: the key's passphrase when it is encrypted.

    Raises:
        CredentialError: a file cannot be read or parsed, the passphrase is missing or wrong, or the
            key does not belong to the certificate. The message names the file.
    """

    __slots__ = ("_certificate", "_certificate_file", "_key_file", "_passphrase")

    def __init__(
        self,
        certificate_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        passphrase: str | bytes | None = None,
    ) -> None:
        if passphrase is not None and not isinstance(passphrase, str | bytes):
            raise TypeError(f"passphrase must be str, bytes or None, not {type(passphrase).__name__}")
        self._certificate_file = os.fspath(certificate_file)
        self._key_file = os.fspath(key_file)
        self._passphrase = passphrase

        certificate_data = _read(self._certificate_file, "certificate")
        try:
            # The first certificate is the device's own; any that follow form its chain.
            self._certificate = x509.load_pem_x509_certificates(certificate_data)[0]
        except ValueError:
            raise CredentialError(
                f"certificate file {self._certificate_file!r} does not contain a PEM certificate"
            ) from None

        password = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
        key = _load_private_key(_read(self._key_file, "key"), password, self._key_file)
        if _public_der(key) != _public_der(self._certificate):
            raise CredentialError(
                f"key file {self._key_file!r} does not match certificate file {self._certificate_file!r}"
            )

    @property
    def certificate(self) -> x509.Certificate:
        """The device certificate."""
        return self._certificate

    @property
    def certificate_file(self) -> str:
        """Path of the certificate file."""
        return self._certificate_file

    @property
    def key_file(self) -> str:
        """Path of the private key file."""
        return self._key_file

    @property
    def thumbprint_sha1(self) -> str:
        """SHA-1 of the certificate's DER encoding, upper-case hex (the hub's primary thumbprint form)."""
        return self._certificate.fingerprint(hashes.SHA1()).hex().upper()

    @property
    def thumbprint_sha256(self) -> str:
        """SHA-256 of the certificate's DER encoding, upper-case hex."""
        return self._certificate.fingerprint(hashes.SHA256()).hex().upper()

    @property
    def common_name(self) -> str | None:
        """The subject's common name (CN), which must equal the device id; ``None`` if absent."""
        attributes = self._certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not attributes:
            return None
        value = attributes[0].value
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    def load_into(self, ssl_context: ssl.SSLContext) -> None:
        """Load the certificate and key into a client TLS context.

        Args:
            ssl_context: the context the connection will use.
        """
        ssl_context.load_cert_chain(self._certificate_file, self._key_file, self._passphrase)

    def __repr__(self) -> str:
        return (
            f"X509Credential(certificate_file={self._certificate_file!r}, key_file={self._key_file!r}, "
            f"common_name={self.common_name!r}, thumbprint_sha1={self.thumbprint_sha1!r})"
        )


Credential: TypeAlias = TokenCredential | X509Credential
"""Anything a client can authenticate with."""
