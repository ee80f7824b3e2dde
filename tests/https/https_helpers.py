"""Helpers for the HTTPS tests: clients that reach the emulator's REST listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aioiothub
from aioiothub.emulator import Emulator, Identity

#: Seconds to wait for something that should happen at once.
STEP = 10.0


def rest_options(hub: Emulator) -> dict[str, Any]:
    """Client options that put MQTT and HTTPS on the emulator's port-443-style listener."""
    return {"port": hub.websocket_port, "websockets": True, "ssl_context": hub.client_ssl_context()}


def device(
    hub: Emulator, identity: Identity, directory: Path | None = None, **options: Any
) -> aioiothub.IoTHubDeviceClient:
    """A device client for ``identity`` (X.509 identities need ``directory`` for their files)."""
    merged = {**rest_options(hub), **options}
    if identity.authentication != "sas":
        assert directory is not None
        certificate_file, key_file = identity.write_certificate_files(directory)
        merged["x509"] = aioiothub.X509Credential(certificate_file, key_file)
    return aioiothub.IoTHubDeviceClient.from_connection_string(identity.connection_string, **merged)
