"""Azurite, Microsoft's Azure Storage emulator, installed from npm into ``<repo>/.peer-node`` and run per test.

The install is idempotent (``tests/peer/npm_packages.py``): it runs only when the installed lock file
differs from the committed one or Azurite is missing (the pinned version runs on Node 20). Azurite
serves HTTPS with a certificate from a CA the test creates, which the emulator then uses too, so
devices and the emulator trust Azurite as they trust the hub. A failed install or start fails the
tests with npm's or Azurite's output: never a silent skip.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from aioiothub.emulator.certs import CertificateAuthority
from tests.peer.npm_packages import NpmInstallError, ensure_npm_packages

HERE = Path(__file__).resolve().parent
PEER_NODE = HERE.parents[1] / ".peer-node"
AZURITE = PEER_NODE / "node_modules" / ".bin" / "azurite-blob"
INSTALL_TIMEOUT = 600.0
START_TIMEOUT = 60.0

ACCOUNT = "devstoreaccount1"
# Azurite's documented development account key.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(rb"listens on https://127\.0\.0\.1:(\d+)")


def ensure_azurite() -> Path:
    """The ``azurite-blob`` launcher, installed from the npm registry when missing."""
    try:
        ensure_npm_packages(HERE, PEER_NODE, ["azurite"])
    except NpmInstallError as exc:
        pytest.fail(f"installing Azurite failed: {exc}", pytrace=False)
    return AZURITE


@dataclass(frozen=True, slots=True)
class Azurite:
    """A running Azurite blob service.

    Attributes:
        connection_string: its account's connection string (HTTPS endpoint).
        certificate_authority: the CA that issued its certificate.
    """

    connection_string: str
    certificate_authority: CertificateAuthority


@pytest.fixture(scope="session")
def azurite_launcher() -> Path:
    return ensure_azurite()


@pytest.fixture
async def azurite(azurite_launcher: Path, tmp_path: Path) -> AsyncIterator[Azurite]:
    """Azurite on a free port with HTTPS, its data in ``tmp_path``."""
    authority = CertificateAuthority.generate()
    cert_pem, key_pem = authority.issue_server_certificate(["127.0.0.1", "localhost"])
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    command = [
        str(azurite_launcher),
        "--blobHost", "127.0.0.1",
        "--blobPort", "0",
        "--location", str(tmp_path / "data"),
        "--cert", str(tmp_path / "cert.pem"),
        "--key", str(tmp_path / "key.pem"),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--silent",
    ]
    process = await anyio.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ)
    )
    try:
        assert process.stdout is not None
        output = BufferedByteReceiveStream(process.stdout)
        seen = b""
        with anyio.fail_after(START_TIMEOUT):
            while (match := _LISTENING.search(seen)) is None:
                try:
                    seen += await output.receive()
                except anyio.EndOfStream:
                    pytest.fail(f"Azurite exited at start:\n{seen.decode(errors='replace')}", pytrace=False)
        port = int(match.group(1))
        yield Azurite(
            f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=https://127.0.0.1:{port}/{ACCOUNT};",
            authority,
        )
    finally:
        with anyio.CancelScope(shield=True):
            process.terminate()
            with anyio.move_on_after(10) as waiting:
                await process.wait()
            if waiting.cancelled_caught:
                process.kill()
            await process.aclose()
