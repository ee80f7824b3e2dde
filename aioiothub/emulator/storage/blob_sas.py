"""Azure Storage shared access signatures and connection strings, as the hub issues them for uploads.

IoT Hub hands a device a *service SAS* for one blob, signed with the storage account key. The
string to sign (storage service version 2020-12-06 and later, which :data:`SAS_VERSION` is)::

    sp \\n st \\n se \\n /blob/{account}/{container}/{blob} \\n si \\n sip \\n spr \\n sv \\n sr \\n
    snapshot-time \\n ses \\n rscc \\n rscd \\n rsce \\n rscl \\n rsct

(empty fields stay empty), signed as ``base64(hmac_sha256(base64decode(account_key), text))``. The
emulator creates the upload container with an *account SAS*, whose string to sign is
``account \\n sp \\n ss \\n srt \\n st \\n se \\n sip \\n spr \\n sv \\n ses \\n``. Both are what
``azure-storage-blob`` and Azurite compute. Pure functions: times are passed in.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from aioiothub.protocol.blob import STORAGE_VERSION

__all__ = [
    "SAS_VERSION",
    "StorageAccount",
    "account_sas",
    "blob_sas",
    "blob_sas_signature",
    "sas_time",
]

SAS_VERSION = STORAGE_VERSION
"""The storage service version the emulator signs with and speaks (``x-ms-version``)."""


def sas_time(moment: datetime.datetime) -> str:
    """A SAS time field: UTC, whole seconds, ``Z``-suffixed ISO 8601."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sign(account_key: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(account_key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def blob_sas_signature(
    account_key: str,
    *,
    account: str,
    container: str,
    blob: str,
    permissions: str,
    expiry: str,
    version: str = SAS_VERSION,
    start: str = "",
    protocol: str = "",
) -> str:
    """The ``sig`` of a service SAS for one blob (``sr=b``)."""
    fields = [
        permissions,
        start,
        expiry,
        f"/blob/{account}/{container}/{blob}",
        "",  # signed identifier
        "",  # signed IP
        protocol,
        version,
        "b",
        "",  # snapshot time
        "",  # encryption scope
        "",  # rscc
        "",  # rscd
        "",  # rsce
        "",  # rscl
        "",  # rsct
    ]
    return _sign(account_key, "\n".join(fields))


def blob_sas(
    account_key: str, *, account: str, container: str, blob: str, permissions: str, expiry: datetime.datetime
) -> str:
    """A service SAS query string (starting with ``?``) granting ``permissions`` on one blob."""
    expiry_text = sas_time(expiry)
    signature = blob_sas_signature(
        account_key,
        account=account,
        container=container,
        blob=blob,
        permissions=permissions,
        expiry=expiry_text,
        protocol="https",
    )
    fields = {"sv": SAS_VERSION, "sr": "b", "sp": permissions, "se": expiry_text, "spr": "https", "sig": signature}
    return "?" + urlencode(fields, quote_via=quote, safe="")


def account_sas(account_key: str, *, account: str, permissions: str, expiry: datetime.datetime) -> str:
    """An account SAS query string (starting with ``?``) for the blob service, every resource type."""
    expiry_text = sas_time(expiry)
    text = "\n".join([account, permissions, "b", "sco", "", expiry_text, "", "", SAS_VERSION, "", ""])
    fields = {
        "sv": SAS_VERSION,
        "ss": "b",
        "srt": "sco",
        "sp": permissions,
        "se": expiry_text,
        "sig": _sign(account_key, text),
    }
    return "?" + urlencode(fields, quote_via=quote, safe="")


@dataclass(frozen=True, slots=True)
class StorageAccount:
    """A storage account given by connection string: its blob endpoint, name and key.

    Example:
        >>> account = StorageAccount.parse(
        ...     "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net"
        ... )
        >>> account.blob_endpoint, account.host_name
        ('https://acct.blob.core.windows.net', 'acct.blob.core.windows.net')
    """

    name: str
    key: str
    blob_endpoint: str

    @classmethod
    def parse(cls, connection_string: str) -> StorageAccount:
        """Read ``AccountName``, ``AccountKey`` and ``BlobEndpoint`` (or protocol and suffix).

        Raises:
            ValueError: a field is missing, the key is not base64, or the endpoint is not HTTPS.
        """
        fields: dict[str, str] = {}
        for part in connection_string.split(";"):
            if part.strip():
                name, separator, value = part.partition("=")
                if not separator:
                    raise ValueError(f"storage connection string part {name!r} has no '='")
                fields[name.strip()] = value.strip()
        try:
            name, key = fields["AccountName"], fields["AccountKey"]
        except KeyError as exc:
            raise ValueError(f"storage connection string has no {exc.args[0]}") from None
        try:
            base64.b64decode(key, validate=True)
        except ValueError:
            raise ValueError("storage connection string AccountKey is not base64") from None
        endpoint = fields.get("BlobEndpoint")
        if endpoint is None:
            protocol = fields.get("DefaultEndpointsProtocol", "https")
            suffix = fields.get("EndpointSuffix", "core.windows.net")
            endpoint = f"{protocol}://{name}.blob.{suffix}"
        endpoint = endpoint.rstrip("/")
        if urlsplit(endpoint).scheme != "https":
            raise ValueError(
                f"the blob endpoint {endpoint!r} is not HTTPS: devices upload over HTTPS only "
                "(start Azurite with --cert and --key)"
            )
        return cls(name, key, endpoint)

    @property
    def host_name(self) -> str:
        """What the hub returns as ``hostName``: the endpoint without its scheme (host, port, any path)."""
        return self.blob_endpoint.split("://", 1)[1]

    def __repr__(self) -> str:
        return f"StorageAccount(name={self.name!r}, key='<redacted>', blob_endpoint={self.blob_endpoint!r})"
