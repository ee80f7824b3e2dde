"""Helpers for the service REST API tests: an httpx client signed with one of the hub's policies."""

from __future__ import annotations

import time

import httpx

from aioiothub.emulator import Emulator
from aioiothub.protocol.sas import generate_sas_token

__all__ = ["policy_token", "service_client"]


def policy_token(hub: Emulator, policy_name: str = "iothubowner", *, scope: str | None = None) -> str:
    """A SAS token of one of the hub's policies, scoped to ``scope`` (default: :attr:`Emulator.service_host`)."""
    policy = next(policy for policy in hub.policies if policy.name == policy_name)
    return generate_sas_token(
        scope or hub.service_host, policy.primary_key, int(time.time()) + 600, policy_name=policy.name
    )


def service_client(hub: Emulator, policy_name: str = "iothubowner", *, token: str | None = None) -> httpx.AsyncClient:
    """An HTTPS client of the hub's service API, authenticated with ``policy_name`` (or ``token``)."""
    return httpx.AsyncClient(
        base_url=f"https://localhost:{hub.websocket_port}",
        verify=hub.client_ssl_context(),
        headers={"Authorization": token or policy_token(hub, policy_name)},
        params={"api-version": "2021-04-12"},
    )
