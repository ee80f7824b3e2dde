"""Fixtures for the client integration tests: one emulator per test module, every test on every transport.

Every test here drives a real client over real sockets (TLS or WebSocket) against the bundled
emulator. Tests sharing a module's emulator stay independent by registering their own device and
module ids (see ``client_helpers.new_id``) and by looking only at the telemetry and twins of those ids.

Each test runs once per transport (``[aiomqtt]`` and ``[native]``): the ``transport`` fixture is
used by every test, and the clients a test builds get that transport, whether through the helpers
in ``client_helpers`` (which pass ``transport=``) or directly (the constructors' default is set to
it for the duration of the test; see ``tests.transport_matrix``). ``AIOIOTHUB_TEST_TRANSPORTS=aiomqtt``
(a comma-separated list) restricts the run to some of them.
"""

from __future__ import annotations

import pytest

from aioiothub.emulator import Emulator
from tests.client import client_helpers
from tests.transport_matrix import parametrize_transport, use_transport

#: Modules that test one transport's internals and build no client: they run once.
_SINGLE_TRANSPORT_MODULES = frozenset({"test_transport_hooks"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] not in _SINGLE_TRANSPORT_MODULES:
        parametrize_transport(metafunc)


@pytest.fixture(autouse=True)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The transport this test's clients use (``None`` in modules that build no client)."""
    name = use_transport(request, monkeypatch)
    if name is not None:
        monkeypatch.setattr(client_helpers, "current_transport", name)
    return name


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
