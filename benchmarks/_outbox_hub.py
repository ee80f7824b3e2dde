"""The outbox benchmark's emulator, in a process of its own (as mosquitto is, and as a device's hub always is).

Run by ``outbox.py`` with the project's interpreter: ``_outbox_hub.py PORT CA_DIR KEY``. Serves
MQTT over TLS on ``PORT`` only (no WebSocket, no AMQP) with the CA kept in ``CA_DIR`` (``ca.pem``,
``ca.key.pem``: the same CA on every start, so that the client's trust survives an outage) and the
device ``bench`` with the key ``KEY``. Prints ``ready`` once listening, then serves until its
standard input closes (or it is killed: an outage either way).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import anyio.to_thread

from aioiothub.emulator import Emulator
from aioiothub.emulator.certs import CertificateAuthority


async def main() -> None:
    """Serve until standard input closes."""
    port, ca_dir, key = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    authority = CertificateAuthority.load((ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key.pem").read_bytes())
    hub = Emulator(
        port=port, websocket_port=None, amqp_port=None, telemetry_limit=1000, certificate_authority=authority
    )
    hub.add_device("bench", primary_key=key)
    async with hub:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    anyio.run(main)
