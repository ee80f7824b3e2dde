"""Where uploaded files go: the embedded blob store, or a real storage account given by connection string.

Either way the hub's part is the same as IoT Hub's: name the blob ``{deviceId}/{blobName}`` in the
upload container, and sign a SAS for that one blob with the account key. With an external account
(Azure Storage, or Azurite started with a certificate) the emulator creates the container when it
starts, and reads blobs back with a read-only SAS of its own.
"""

from __future__ import annotations

import datetime
import ssl
from typing import Final, Protocol
from urllib.parse import quote

import httpx

from aioiothub.emulator.storage.blob_sas import SAS_VERSION, StorageAccount, account_sas, blob_sas
from aioiothub.emulator.storage.blob_store import BlobStore
from aioiothub.protocol.blob import blob_url

__all__ = ["EmbeddedStorage", "ExternalStorage", "UploadStorage"]

_REQUEST_TIMEOUT: Final = 30.0
# Devices get read, create and write on their own blob, as IoT Hub grants.
_UPLOAD_PERMISSIONS: Final = "rcw"


class UploadStorage(Protocol):
    """What the file-upload endpoints need from storage."""

    container: str

    @property
    def host_name(self) -> str:
        """``hostName`` in the storage-info answer (host, port and any path prefix)."""
        ...

    def sas_token(self, blob_name: str, expiry: datetime.datetime) -> str:
        """A SAS query string (with its ``?``) for uploading ``blob_name``."""
        ...

    async def read(self, blob_name: str) -> bytes:
        """The committed content of ``blob_name``.

        Raises:
            LookupError: there is no such blob.
        """
        ...

    async def size(self, blob_name: str) -> int:
        """The size in bytes of ``blob_name``, without reading it.

        Raises:
            LookupError: there is no such blob.
        """
        ...


class EmbeddedStorage:
    """Uploads go to the emulator's own :class:`BlobStore`.

    Args:
        store: the store.
        container: the upload container (created here).
    """

    def __init__(self, store: BlobStore, container: str) -> None:
        self.store = store
        self.container = container
        self.endpoint = ""  # "host:port", set once the blob listener is up
        store.create_container(container)

    @property
    def host_name(self) -> str:
        """``host:port`` of the blob listener."""
        return self.endpoint

    def sas_token(self, blob_name: str, expiry: datetime.datetime) -> str:
        """A service SAS for ``blob_name`` signed with the store's key."""
        store = self.store
        return blob_sas(
            store.account_key,
            account=store.account_name,
            container=self.container,
            blob=blob_name,
            permissions=_UPLOAD_PERMISSIONS,
            expiry=expiry,
        )

    async def read(self, blob_name: str) -> bytes:
        """The blob's bytes, from memory."""
        blob = self.store.blob(self.container, blob_name)
        if blob is None:
            raise LookupError(f"no blob {blob_name!r} in container {self.container!r}")
        return blob.data

    async def size(self, blob_name: str) -> int:
        """The blob's size, from memory."""
        return len(await self.read(blob_name))


class ExternalStorage:
    """Uploads go to a real storage account (or Azurite) given by connection string.

    Args:
        connection_string: the account's connection string; its blob endpoint must be HTTPS.
        container: the upload container, created by :meth:`prepare` when missing.
    """

    def __init__(self, connection_string: str, container: str) -> None:
        self.account = StorageAccount.parse(connection_string)
        self.container = container
        self._ssl_context: ssl.SSLContext | bool = True

    @property
    def host_name(self) -> str:
        """The account's blob endpoint without ``https://``."""
        return self.account.host_name

    def sas_token(self, blob_name: str, expiry: datetime.datetime) -> str:
        """A service SAS for ``blob_name`` signed with the account key."""
        return blob_sas(
            self.account.key,
            account=self.account.name,
            container=self.container,
            blob=blob_name,
            permissions=_UPLOAD_PERMISSIONS,
            expiry=expiry,
        )

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=self._ssl_context, timeout=_REQUEST_TIMEOUT, trust_env=False)

    async def prepare(self, ssl_context: ssl.SSLContext) -> None:
        """Create the upload container unless it exists; ``ssl_context`` verifies the endpoint from now on.

        Raises:
            OSError: the storage endpoint cannot be reached or refused the request.
        """
        self._ssl_context = ssl_context
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
        sas = account_sas(self.account.key, account=self.account.name, permissions="rwc", expiry=expiry)
        url = f"{self.account.blob_endpoint}/{quote(self.container, safe='')}{sas}&restype=container"
        try:
            async with self._client() as client:
                response = await client.put(url, headers={"x-ms-version": SAS_VERSION})
        except httpx.HTTPError as exc:
            raise OSError(f"cannot reach the storage account at {self.account.blob_endpoint}: {exc!r}") from None
        if response.status_code not in (201, 409):  # 409: it exists already
            raise OSError(
                f"storage account refused to create container {self.container!r}: "
                f"{response.status_code} {response.text[:300]}"
            )

    async def read(self, blob_name: str) -> bytes:
        """Download the blob with a short-lived read SAS."""
        return (await self._request("GET", blob_name)).content

    async def size(self, blob_name: str) -> int:
        """The blob's ``Content-Length``, from a HEAD request with a short-lived read SAS."""
        return int((await self._request("HEAD", blob_name)).headers["content-length"])

    async def _request(self, method: str, blob_name: str) -> httpx.Response:
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
        sas = blob_sas(
            self.account.key,
            account=self.account.name,
            container=self.container,
            blob=blob_name,
            permissions="r",
            expiry=expiry,
        )
        url = blob_url(self.account.host_name, self.container, blob_name, sas)
        async with self._client() as client:
            response = await client.request(method, url, headers={"x-ms-version": SAS_VERSION})
        if response.status_code == 404:
            raise LookupError(f"no blob {blob_name!r} in container {self.container!r}")
        response.raise_for_status()
        return response
