"""Certificates and TLS contexts for the emulator: a throwaway CA, server and device certificates.

Keys are EC P-256: they are generated in a millisecond and make TLS handshakes cheap, which matters
when a benchmark opens thousands of connections at once.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "certificate_common_name",
    "certificate_thumbprints",
    "client_ssl_context",
    "generate_self_signed_certificate",
    "server_ssl_context",
    "server_tls_material",
    "trust_client_certificate",
]

_CA_LIFETIME = datetime.timedelta(days=3650)
_LEAF_LIFETIME = datetime.timedelta(days=365)
# Certificates are backdated so that a peer whose clock runs a little behind still accepts them.
_BACKDATE = datetime.timedelta(hours=1)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, argument: str) -> x509.Name:
    if not isinstance(common_name, str):
        raise TypeError(f"{argument} must be a str, not {type(common_name).__name__}")
    if not 1 <= len(common_name) <= 64:
        raise ValueError(f"{argument} must be 1 to 64 characters long, got {len(common_name)}")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder, lifetime: datetime.timedelta) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - _BACKDATE).not_valid_after(now + lifetime)


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _load_certificate(cert: bytes, argument: str = "cert") -> x509.Certificate:
    if not isinstance(cert, bytes | bytearray):
        raise TypeError(f"{argument} must be bytes (PEM or DER), not {type(cert).__name__}")
    data = bytes(cert)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"{argument} is not a PEM or DER X.509 certificate: {exc}") from None


def _leaf_extensions(usage: x509.ObjectIdentifier) -> list[tuple[x509.ExtensionType, bool]]:
    """Extensions of an end-entity certificate for one use (server or client auth)."""
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_leaf_key_usage(), True),
        (x509.ExtendedKeyUsage([usage]), False),
    ]


def _sign_certificate(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signing_key: ec.EllipticCurvePrivateKey,
    lifetime: datetime.timedelta,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """Build and sign a certificate for ``key`` (``(extension, critical)`` pairs in order)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return _validity(builder, lifetime).sign(signing_key, hashes.SHA256())


class CertificateAuthority:
    """A private certificate authority that signs the emulator's server and client certificates.

    Create one with :meth:`generate` (or :meth:`load` to reuse a saved one); clients trust
    :attr:`certificate_pem`.
    """

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        """Wrap an existing CA certificate and its private key; most callers want :meth:`generate`."""
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("key must be an EC private key")
        if certificate.public_key() != key.public_key():
            raise ValueError("key does not match certificate")
        self._certificate = certificate
        self._key = key

    @classmethod
    def generate(cls, common_name: str = "aioiothub emulator CA") -> CertificateAuthority:
        """Create a new CA with a fresh P-256 key, valid for ten years.

        Raises:
            ValueError: ``common_name`` is empty or longer than 64 characters.
        """
        name = _name(common_name, "common_name")
        key = _new_key()
        ca_usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        extensions = [(x509.BasicConstraints(ca=True, path_length=0), True), (ca_usage, True)]
        certificate = _sign_certificate(name, name, key, key, _CA_LIFETIME, extensions)
        return cls(certificate, key)

    @classmethod
    def load(cls, certificate_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """Rebuild a CA saved earlier from :attr:`certificate_pem` and :attr:`key_pem`.

        Raises:
            ValueError: either PEM cannot be read, or the key does not match the certificate.
        """
        certificate = _load_certificate(certificate_pem, "certificate_pem")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"key_pem is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("key_pem must hold an EC private key")
        return cls(certificate, key)

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate in PEM form: what clients must trust."""
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The CA private key in unencrypted PKCS#8 PEM form (keep it private)."""
        return _key_pem(self._key)

    def _issue(
        self,
        common_name: str,
        argument: str,
        usage: x509.ObjectIdentifier,
        alternative_names: Sequence[x509.GeneralName] = (),
    ) -> tuple[bytes, bytes]:
        key = _new_key()
        extensions = _leaf_extensions(usage)
        extensions.append(
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False)
        )
        if alternative_names:
            extensions.append((x509.SubjectAlternativeName(alternative_names), False))
        subject = _name(common_name, argument)
        certificate = _sign_certificate(
            subject, self._certificate.subject, key, self._key, _LEAF_LIFETIME, extensions
        )
        return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue_server_certificate(self, hostnames: Sequence[str]) -> tuple[bytes, bytes]:
        """Issue a TLS server certificate for ``hostnames`` (DNS names or IP addresses).

        Each name becomes a DNS or IP subject alternative name as appropriate; the first one is also
        the subject common name.

        Returns:
            ``(certificate PEM, private key PEM)``.

        Raises:
            ValueError: ``hostnames`` is empty or holds an empty name.
        """
        if isinstance(hostnames, str):
            raise TypeError("hostnames must be a sequence of names, not a single str")
        if not hostnames:
            raise ValueError("hostnames may not be empty")
        alternative_names: list[x509.GeneralName] = []
        for index, hostname in enumerate(hostnames):
            if not isinstance(hostname, str) or not hostname:
                raise ValueError(f"hostnames[{index}] must be a non-empty str")
            try:
                address = ipaddress.ip_address(hostname)
            except ValueError:
                alternative_names.append(x509.DNSName(hostname))
            else:
                alternative_names.append(x509.IPAddress(address))
        return self._issue(hostnames[0], "hostnames[0]", ExtendedKeyUsageOID.SERVER_AUTH, alternative_names)

    def issue_client_certificate(self, common_name: str) -> tuple[bytes, bytes]:
        """Issue a TLS client certificate whose subject common name is ``common_name``.

        Returns:
            ``(certificate PEM, private key PEM)``.
        """
        return self._issue(common_name, "common_name", ExtendedKeyUsageOID.CLIENT_AUTH)


def generate_self_signed_certificate(common_name: str) -> tuple[bytes, bytes]:
    """Create a self-signed client certificate, as used by X.509 devices known by thumbprint.

    Returns:
        ``(certificate PEM, private key PEM)``.
    """
    name = _name(common_name, "common_name")
    key = _new_key()
    extensions = _leaf_extensions(ExtendedKeyUsageOID.CLIENT_AUTH)
    certificate = _sign_certificate(name, name, key, key, _LEAF_LIFETIME, extensions)
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def certificate_thumbprints(cert: bytes) -> tuple[str, str]:
    """Return the SHA-1 and SHA-256 thumbprints of a certificate (PEM or DER) as upper-case hex.

    These are digests of the DER encoding, the form IoT Hub registers X.509 devices by.

    Raises:
        ValueError: ``cert`` is not a certificate.
    """
    der = _load_certificate(cert).public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()


def certificate_common_name(cert: bytes) -> str:
    """Return the subject common name of a certificate (PEM or DER).

    Raises:
        ValueError: ``cert`` is not a certificate, or its subject has no common name.
    """
    attributes = _load_certificate(cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        raise ValueError("cert has no subject common name")
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def server_ssl_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """Build the emulator's server context: TLS 1.2 or later, client certificate optional.

    A client certificate that is sent must verify against what :func:`trust_client_certificate`
    added, or the handshake fails; a client that sends none is accepted (SAS authentication).

    Raises:
        ValueError: the certificate or key cannot be loaded, or they do not match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_OPTIONAL
    context.options |= ssl.OP_NO_RENEGOTIATION
    # load_cert_chain reads only files; a private directory keeps the key unreadable to other users
    # for the instant it is on disk.
    with tempfile.TemporaryDirectory(prefix="aioiothub-") as directory:
        cert_file = os.path.join(directory, "cert.pem")
        key_file = os.path.join(directory, "key.pem")
        for path, data in ((cert_file, cert_pem), (key_file, key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise ValueError(f"cert_pem and key_pem cannot be loaded as a matching pair: {exc}") from None
    return context


def trust_client_certificate(context: ssl.SSLContext, cert_pem: bytes) -> None:
    """Make ``context`` accept client certificates issued by a CA, or one self-signed certificate.

    Takes effect for every later handshake on the same context.

    Raises:
        ValueError: ``cert_pem`` is not a certificate.
    """
    der = _load_certificate(cert_pem, "cert_pem").public_bytes(serialization.Encoding.DER)
    context.load_verify_locations(cadata=der)


def client_ssl_context(ca_pem: bytes) -> ssl.SSLContext:
    """Build a client context that trusts only ``ca_pem``, with TLS 1.2 or later and hostname checks.

    Raises:
        ValueError: ``ca_pem`` is not a certificate.
    """
    der = _load_certificate(ca_pem, "ca_pem").public_bytes(serialization.Encoding.DER)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=der)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_tls_material(
    authority: CertificateAuthority,
    names: Sequence[str],
    *,
    certfile: str | os.PathLike[str] | None,
    keyfile: str | os.PathLike[str] | None,
) -> tuple[ssl.SSLContext, bytes]:
    """The listeners' server context and the CA clients must trust.

    With ``certfile`` and ``keyfile``, their certificate (whose issuer clients must then trust, so
    the file itself is what is returned to trust); otherwise a server certificate for ``names``
    issued by ``authority``. Either way the context trusts ``authority`` for client certificates
    (``"x509_ca"`` identities).
    """
    if certfile is not None and keyfile is not None:
        with open(certfile, "rb") as cert_file, open(keyfile, "rb") as key_file:
            cert_pem = cert_file.read()
            context = server_ssl_context(cert_pem, key_file.read())
        ca_pem = cert_pem
    else:
        cert_pem, key_pem = authority.issue_server_certificate(list(names))
        context = server_ssl_context(cert_pem, key_pem)
        ca_pem = authority.certificate_pem
    trust_client_certificate(context, authority.certificate_pem)
    return context, ca_pem
