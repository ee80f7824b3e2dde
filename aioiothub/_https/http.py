"""Authenticated HTTPS requests to the hub (or an IoT Edge gateway), and the one translation boundary for httpx.

Every REST call a client makes goes through :class:`HubHttp`: it opens an ``httpx`` client on the
client's TLS context (its CA and, for X.509 identities, its certificate), proxy and deadline, adds
``Authorization: SharedAccessSignature …`` from the client's credential, and turns what can go wrong
into the library's exceptions::

    httpx.ConnectError, ProxyError     -> ConnectError
    httpx.TimeoutException, deadline   -> TimeoutError (naming the request and the deadline)
    other httpx.TransportError         -> ConnectionLostError
    a status >= 300                    -> ServiceError (ThrottledError for 429), .status set
    a body that is not the JSON asked  -> ProtocolError

The HTTPS port is 443, as IoT Hub and edgeHub serve it, except for a client that connects over
WebSocket: its ``port`` is the hub's port-443 listener, which serves REST as well (the emulator).
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import anyio
import httpx

from aioiothub._auth.credentials import Credential, X509Credential
from aioiothub.exceptions import ConnectError, ConnectionLostError, ServiceError, ThrottledError
from aioiothub.options import ProxyOptions
from aioiothub.protocol.connect import API_VERSION
from aioiothub.protocol.json_payloads import load_json_payload
from aioiothub.protocol.sas import device_resource_uri

__all__ = [
    "HTTPS_PORT",
    "HttpSettings",
    "HubHttp",
    "proxy_url",
    "raise_for_status",
    "storage_ssl_context",
    "translate_errors",
]

HTTPS_PORT: Final = 443

_SECRET_QUERY = re.compile(r"(sig=)[^&\s\"']+")


class _RedactSignatures(logging.Filter):
    """httpx logs every request URL at INFO; a blob URL carries its SAS signature in the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                arg if isinstance(arg, int | float) else _SECRET_QUERY.sub(r"\1<redacted>", str(arg))
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactSignatures())


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What an HTTPS call needs from its client.

    Attributes:
        hostname: the IoT hub's host name (the SAS scope).
        device_id: the client's device.
        module_id: the client's module, or ``None``.
        credential: SAS source or X.509 certificate.
        host: where requests go: the gateway host name when there is one, else ``hostname``.
        port: the HTTPS port.
        ssl_context: the client's TLS context.
        proxy: the client's proxy, if any.
        timeout: the deadline of each request in seconds.
        user_agent: the ``User-Agent`` header.
    """

    hostname: str
    device_id: str
    module_id: str | None
    credential: Credential
    host: str
    port: int
    ssl_context: ssl.SSLContext
    proxy: ProxyOptions | None
    timeout: float
    user_agent: str

    @classmethod
    def from_session(cls, settings: Any) -> HttpSettings:
        """Take what HTTPS needs from a client's :class:`~aioiothub._session.session.SessionSettings`."""
        return cls(
            hostname=settings.hostname,
            device_id=settings.device_id,
            module_id=settings.module_id,
            credential=settings.credential,
            host=settings.connect_host,
            port=settings.port if settings.websockets else HTTPS_PORT,
            ssl_context=settings.ssl_context,
            proxy=settings.proxy,
            timeout=settings.request_timeout,
            user_agent=settings.product_info,
        )


def proxy_url(proxy: ProxyOptions | None) -> str | None:
    """The proxy as httpx takes it (``http://`` or ``socks5://``, credentials included).

    Raises:
        ValueError: a SOCKS4 proxy, which httpx cannot use.
    """
    if proxy is None:
        return None
    if proxy.proxy_type == "socks4":
        raise ValueError("HTTPS requests cannot go through a SOCKS4 proxy; use an HTTP or SOCKS5 proxy")
    credentials = ""
    if proxy.username is not None:
        credentials = quote(proxy.username, safe="")
        if proxy.password is not None:
            credentials += ":" + quote(proxy.password, safe="")
        credentials += "@"
    host = f"[{proxy.address}]" if ":" in proxy.address else proxy.address
    return f"{proxy.proxy_type}://{credentials}{host}:{proxy.port}"


def storage_ssl_context(client_context: ssl.SSLContext) -> ssl.SSLContext:
    """A context for Azure Storage: the system's CAs plus any the client trusts, and no client certificate.

    Storage is not the hub: the device's certificate has no business there, but a private CA the
    client was given (a test hub's, say) may well have issued the storage endpoint's certificate.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for der in client_context.get_ca_certs(binary_form=True):
        context.load_verify_locations(cadata=der)
    return context


class translate_errors:
    """Turn httpx's exceptions into the library's, with ``what`` (the request) in the message."""

    def __init__(self, what: str, timeout: float) -> None:
        self._what = what
        self._timeout = timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, httpx.TimeoutException) or (isinstance(exc, TimeoutError) and not str(exc)):
            raise TimeoutError(f"{self._what} timed out after {self._timeout:g} s") from exc
        if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
            raise ConnectError(f"{self._what}: cannot connect: {exc}") from exc
        if isinstance(exc, httpx.TransportError):
            raise ConnectionLostError(f"{self._what}: the connection failed: {exc!r}") from exc


def raise_for_status(response: httpx.Response, what: str) -> None:
    """Raise :class:`ServiceError` (or :class:`ThrottledError`) for a status of 300 or more."""
    status = response.status_code
    if status < 300:
        return
    detail = response.text[:500].strip()
    error = ThrottledError if status == 429 else ServiceError
    raise error(f"{what} failed with HTTP {status} {response.reason_phrase}: {detail}", status=status)


class HubHttp:
    """An HTTPS session with the hub for one client; use it as ``async with HubHttp(settings) as http``.

    Args:
        settings: the client's HTTPS settings.
    """

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        settings = self.settings
        self._client = httpx.AsyncClient(
            base_url=f"https://{settings.host}:{settings.port}",
            verify=settings.ssl_context,
            proxy=proxy_url(settings.proxy),
            timeout=settings.timeout,
            trust_env=False,
            headers={"User-Agent": settings.user_agent},
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def _authorization(self) -> dict[str, str]:
        settings = self.settings
        if isinstance(settings.credential, X509Credential):
            return {}
        resource_uri = device_resource_uri(settings.hostname, settings.device_id, settings.module_id)
        grant = await settings.credential.get_token(resource_uri, time.time())
        return {"Authorization": grant.token}

    async def post_json(
        self,
        path: str,
        body: Any,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        deadline: float | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """POST ``body`` as JSON to ``path`` (``?api-version`` added) and return the decoded answer.

        Returns:
            The JSON answer, or ``None`` for an empty body (204).

        Raises:
            ServiceError: the hub answered 300 or more.
            TimeoutError: no answer within ``deadline`` (the client's ``request_timeout`` by default).
            ConnectError, ConnectionLostError: the request could not be carried.
            ProtocolError: the answer is not JSON.
        """
        client = self._client
        if client is None:
            raise RuntimeError("use HubHttp as 'async with HubHttp(settings) as http'")
        deadline = self.settings.timeout if deadline is None else deadline
        content = json.dumps(body, separators=(",", ":")).encode("utf-8")
        all_headers = {"Content-Type": content_type, "Accept": "application/json", **(headers or {})}
        with translate_errors(what, deadline):
            with anyio.fail_after(deadline):
                all_headers.update(await self._authorization())
                response = await client.post(
                    path, params={"api-version": API_VERSION}, content=content, headers=all_headers, timeout=deadline
                )
        raise_for_status(response, what)
        if not response.content:
            return None
        return load_json_payload(response.content, f"the answer to {what}")
