"""Fixtures for the client integration tests: one emulator per test module.

Every test here drives a real client over real sockets (TLS or WebSocket) against the bundled
emulator. Tests sharing a module's emulator stay independent by registering their own device and
module ids (see ``client_helpers.new_id``) and by looking only at the telemetry and twins of those ids.
"""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope, so that one emulator (a module-scoped async fixture) serves a whole test file.
    return "asyncio"


@pytest.fixture(scope="module")
def hub(iothub_emulator_module: Emulator) -> Emulator:
    """An emulator listening on TLS and WebSocket ports for the duration of a test module.

    The ``aioiothub.testing`` plugin's ``iothub_emulator_module``, under the name these tests use.
    """
    return iothub_emulator_module
