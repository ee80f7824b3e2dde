"""IoT Edge modules: the runtime's environment, its workload API, and tokens signed there.

An Edge module never sees its key. The Edge runtime gives its container ``IOTEDGE_*`` variables;
the module asks the workload API (HTTP on a Unix socket, ``IOTEDGE_WORKLOADURI``) for the trust
bundle of edgeHub's TLS certificate and to sign each SAS token, and connects to edgeHub at
``IOTEDGE_GATEWAYHOSTNAME`` with the hub's host name in its username and token scope. For
debugging outside the runtime, ``EdgeHubConnectionString`` (with ``GatewayHostName``) and
``EdgeModuleCACertificateFile`` stand in. Everything here that talks to the workload API is async.

Example:
    >>> async def main():
    ...     module = await IoTHubModuleClient.from_edge_environment()
    ...     async with module:
    ...         await module.send_message_to_output({"ok": True}, "output1")
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

import anyio
import httpx

from aioiothub._auth.credentials import SasTokenGrant
from aioiothub.exceptions import CredentialError, IoTHubError
from aioiothub.protocol.connection_string import ConnectionString
from aioiothub.protocol.json_payloads import load_json_object
from aioiothub.protocol.sas import device_resource_uri, string_to_sign

__all__ = ["EDGE_VARIABLES", "EdgeEnvironment", "WorkloadClient", "WorkloadCredential", "edge_client_options"]

EDGE_VARIABLES: Final = (
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_APIVERSION",
)
"""What the Edge runtime sets in every module's environment."""

_DEBUG_VARIABLES: Final = ("EdgeHubConnectionString", "EdgeModuleCACertificateFile")
_WORKLOAD_TIMEOUT: Final = 10.0
_OWN_OPTIONS: Final = frozenset(
    {"hostname", "device_id", "module_id", "gateway_hostname", "ssl_context", "shared_access_key", "sas_token",
     "renew_sas_token", "x509"}
)


@dataclass(frozen=True, slots=True)
class EdgeEnvironment:
    """The ``IOTEDGE_*`` variables of a module.

    Attributes:
        hostname: the IoT hub's host name.
        device_id: the Edge device.
        module_id: this module.
        gateway_hostname: edgeHub's host name.
        generation_id: this module's generation id.
        workload_uri: ``unix:///path/to/workload.sock`` (or ``http://host:port``).
        api_version: the workload API version to ask for.
    """

    hostname: str
    device_id: str
    module_id: str
    gateway_hostname: str
    generation_id: str
    workload_uri: str
    api_version: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EdgeEnvironment:
        """Read the variables.

        Raises:
            CredentialError: some are missing or empty (the message names them).
        """
        missing = [name for name in EDGE_VARIABLES if not environ.get(name)]
        if missing:
            raise CredentialError(f"the IoT Edge environment is incomplete: {', '.join(missing)} not set")
        return cls(*(environ[name] for name in EDGE_VARIABLES))


class WorkloadClient:
    """The Edge workload API: trust bundle and signing, over its Unix socket.

    Args:
        environment: the module's environment.
        timeout: the deadline of each call in seconds.
    """

    def __init__(self, environment: EdgeEnvironment, *, timeout: float = _WORKLOAD_TIMEOUT) -> None:
        self._environment = environment
        self._timeout = timeout
        parts = urlsplit(environment.workload_uri)
        if parts.scheme == "unix":
            self._socket: str | None = unquote(parts.netloc + parts.path)
            self._base_url = "http://workload"
        elif parts.scheme in ("http", "https"):
            self._socket = None
            self._base_url = environment.workload_uri.rstrip("/")
        else:
            raise CredentialError(f"IOTEDGE_WORKLOADURI {environment.workload_uri!r} is not unix:// or http://")

    async def _call(self, method: str, path: str, what: str, body: bytes | None = None) -> dict[str, Any]:
        transport = httpx.AsyncHTTPTransport(uds=self._socket) if self._socket is not None else None
        where = self._socket or self._base_url
        try:
            async with httpx.AsyncClient(transport=transport, timeout=self._timeout, trust_env=False) as client:
                with anyio.fail_after(self._timeout):
                    response = await client.request(
                        method,
                        f"{self._base_url}{path}",
                        params={"api-version": self._environment.api_version},
                        content=body,
                    )
        except (httpx.TransportError, TimeoutError) as exc:
            raise CredentialError(f"the IoT Edge workload API at {where} cannot be reached ({what}): {exc!r}") from None
        if response.status_code != 200:
            raise CredentialError(
                f"the IoT Edge workload API refused {what}: HTTP {response.status_code} {response.text[:300]}"
            )
        try:
            return load_json_object(response.content, f"the workload API's answer to {what}")
        except IoTHubError as exc:
            raise CredentialError(str(exc)) from None

    async def trust_bundle(self) -> str:
        """The PEM certificates edgeHub's TLS certificate chains to.

        Raises:
            CredentialError: the socket cannot be reached, or the call was refused or answered badly.
        """
        answer = await self._call("GET", "/trust-bundle", "the trust bundle")
        certificate = answer.get("certificate")
        if not isinstance(certificate, str) or "BEGIN CERTIFICATE" not in certificate:
            raise CredentialError("the workload API's trust bundle holds no PEM certificate")
        return certificate

    async def sign(self, text: str) -> str:
        """Sign ``text`` with the module's primary key: base64 HMAC-SHA256.

        Raises:
            CredentialError: the socket cannot be reached, or signing was refused.
        """
        environment = self._environment
        module, generation = quote(environment.module_id, safe=""), quote(environment.generation_id, safe="")
        path = f"/modules/{module}/genid/{generation}/sign"
        body = {"keyId": "primary", "algo": "HMACSHA256", "data": base64.b64encode(text.encode()).decode("ascii")}
        answer = await self._call("POST", path, "signing", json.dumps(body).encode("ascii"))
        digest = answer.get("digest")
        if not isinstance(digest, str) or not digest:
            raise CredentialError("the workload API's signing answer holds no digest")
        return digest


class WorkloadCredential:
    """A :class:`~aioiothub._auth.credentials.TokenCredential` whose tokens the workload API signs.

    Args:
        workload: the workload API.
        resource_uri: the module's scope, ``{hub}/devices/{device}/modules/{module}``.
        ttl: lifetime of each token in seconds.
    """

    def __init__(self, workload: WorkloadClient, resource_uri: str, *, ttl: int = 3600) -> None:
        self._workload = workload
        self._resource_uri = resource_uri
        self._ttl = ttl

    @property
    def renewable(self) -> bool:
        """Always ``True``: the workload API signs a new token whenever asked."""
        return True

    async def get_token(self, resource_uri: str, now: float, *, fresh: bool = False) -> SasTokenGrant:
        """A new token for ``resource_uri``, valid until ``int(now) + ttl``.

        Raises:
            CredentialError: the workload API cannot be reached or refused to sign.
        """
        expiry = int(now) + self._ttl
        encoded = quote(resource_uri, safe="")
        signature = await self._workload.sign(string_to_sign(encoded, expiry))
        token = f"SharedAccessSignature sr={encoded}&sig={quote(signature, safe='')}&se={expiry}"
        return SasTokenGrant(token, expiry)

    async def renew(self) -> str:
        """A new token for the module's own scope (what a client's ``renew_sas_token`` calls)."""
        return (await self.get_token(self._resource_uri, time.time(), fresh=True)).token

    def __repr__(self) -> str:
        return f"WorkloadCredential(resource_uri={self._resource_uri!r}, ttl={self._ttl!r})"


def _tls_context(pem: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise CredentialError(f"the edgeHub trust bundle cannot be loaded: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def edge_client_options(environ: Mapping[str, str] | None, options: dict[str, Any]) -> dict[str, Any]:
    """The arguments of :func:`aioiothub._client.settings.build_settings` for a module built from the Edge environment.

    Args:
        environ: the environment to read (``os.environ`` when ``None``).
        options: further client options from the caller (``port``, ``websockets``, ``sas_ttl``…).

    Raises:
        TypeError: ``options`` sets something the environment decides.
        CredentialError: neither the Edge variables nor the debug ones are complete, the workload
            API cannot be reached or refuses, or the CA file cannot be read.
    """
    taken = sorted(_OWN_OPTIONS & options.keys())
    if taken:
        raise TypeError(f"{', '.join(taken)} come(s) from the IoT Edge environment; do not pass them")
    env = os.environ if environ is None else environ
    if not any(env.get(name) for name in EDGE_VARIABLES) and all(env.get(name) for name in _DEBUG_VARIABLES):
        return await _debug_options(env, options)
    if not any(env.get(name) for name in EDGE_VARIABLES):
        raise CredentialError(
            "not in an IoT Edge module: none of " + ", ".join(EDGE_VARIABLES)
            + " is set (nor EdgeHubConnectionString and EdgeModuleCACertificateFile for local debugging)"
        )
    environment = EdgeEnvironment.from_environ(env)
    workload = WorkloadClient(environment)
    context = _tls_context(await workload.trust_bundle())
    resource_uri = device_resource_uri(environment.hostname, environment.device_id, environment.module_id)
    credential = WorkloadCredential(workload, resource_uri, ttl=options.get("sas_ttl", 3600))
    # The first token is signed now, so that a refusal shows here rather than at connect.
    await credential.renew()
    return {
        "hostname": environment.hostname,
        "device_id": environment.device_id,
        "module_id": environment.module_id,
        "credential": credential,
        "options": {**options, "gateway_hostname": environment.gateway_hostname, "ssl_context": context},
    }


async def _debug_options(env: Mapping[str, str], options: dict[str, Any]) -> dict[str, Any]:
    parsed = ConnectionString.parse(env["EdgeHubConnectionString"])
    if parsed.module_id is None or parsed.gateway_host_name is None or parsed.shared_access_key is None:
        raise CredentialError("EdgeHubConnectionString needs ModuleId, SharedAccessKey and GatewayHostName")
    path = anyio.Path(env["EdgeModuleCACertificateFile"])
    try:
        pem = await path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read EdgeModuleCACertificateFile {str(path)!r}: {exc}") from None
    return {
        "hostname": parsed.host_name,
        "device_id": parsed.device_id,
        "module_id": parsed.module_id,
        "shared_access_key": parsed.shared_access_key,
        "options": {**options, "gateway_hostname": parsed.gateway_host_name, "ssl_context": _tls_context(pem)},
    }
