"""Authenticate with an X.509 client certificate.

Run it with no arguments to use the embedded emulator (which registers a device with a self-signed
certificate and writes the certificate and key files), or set ``IOTHUB_HOSTNAME``,
``IOTHUB_DEVICE_ID``, ``IOTHUB_X509_CERT_FILE`` and ``IOTHUB_X509_KEY_FILE`` for a real hub.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import anyio

import aioiothub
from aioiothub.emulator import Emulator


async def send(hostname: str, device_id: str, cert_file: str, key_file: str, **options: Any) -> None:
    credential = aioiothub.X509Credential(cert_file, key_file)
    print("certificate thumbprint (SHA-256):", credential.thumbprint_sha256)
    async with aioiothub.IoTHubDeviceClient(
        hostname=hostname, device_id=device_id, x509=credential, **options
    ) as client:
        await client.send_message({"authenticated": "with a certificate"})
        twin = await client.get_twin()
        print("connected with a certificate; twin desired:", twin.desired)


async def main() -> None:
    if os.environ.get("IOTHUB_HOSTNAME"):
        await send(
            os.environ["IOTHUB_HOSTNAME"], os.environ["IOTHUB_DEVICE_ID"],
            os.environ["IOTHUB_X509_CERT_FILE"], os.environ["IOTHUB_X509_KEY_FILE"],
        )
        return
    async with Emulator(websocket_port=None) as hub:
        identity = hub.add_device("x509-device", authentication="x509")
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = identity.write_certificate_files(Path(folder))
            await send(
                hub.hostname, "x509-device", str(cert_file), str(key_file),
                port=hub.port, ssl_context=hub.client_ssl_context(),
            )


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
