"""Fixtures for the client integration tests: one emulator per test module, every test on every transport.

Every test here drives a real client over real sockets (TLS or WebSocket) against the bundled
emulator. Tests sharing a module's emulator stay independent by registering their own device and
module ids (see ``client_helpers.new_id``) and by looking only at the telemetry and twins of those ids.

Each test runs once per transport (``[aiomqtt]`` and ``[native]``): the ``transport`` fixture is
used by every test, and the clients a test builds get that transport, whether through the helpers
in ``client_helpers`` (which pass ``transport=``) or directly (the constructors' default is set to
it for the duration of the test). ``AIOIOTHUB_TEST_TRANSPORTS=aiomqtt`` (a comma-separated list)
restricts the run to some of them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import pytest

import aioiothub
from aioiothub.emulator import Emulator
from aioiothub.transports import TRANSPORT_NAMES
from tests.client import client_helpers

#: Modules that test one transport's internals and build no client: they run once.
_SINGLE_TRANSPORT_MODULES = frozenset({"test_transport_hooks"})


def selected_transports() -> list[str]:
    """The transports to run the client tests on: all, or those named in ``AIOIOTHUB_TEST_TRANSPORTS``."""
    chosen = os.environ.get("AIOIOTHUB_TEST_TRANSPORTS", "").strip()
    if not chosen:
        return list(TRANSPORT_NAMES)
    names = [name.strip() for name in chosen.split(",") if name.strip()]
    unknown = sorted(set(names) - set(TRANSPORT_NAMES))
    if unknown:
        raise pytest.UsageError(f"AIOIOTHUB_TEST_TRANSPORTS names unknown transports: {', '.join(unknown)}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rpartition(".")[2]
    if "transport" in metafunc.fixturenames and module not in _SINGLE_TRANSPORT_MODULES:
        names = selected_transports()
        metafunc.parametrize("transport", names, indirect=True, ids=names)


def _with_default_transport(init: Callable[..., None], name: str) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **options: Any) -> None:
        options.setdefault("transport", name)
        init(self, *args, **options)

    return wrapper


@pytest.fixture(autouse=True)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The transport this test's clients use (``None`` in modules that build no client)."""
    name: str | None = getattr(request, "param", None)
    if name is None:
        return None
    monkeypatch.setattr(client_helpers, "current_transport", name)
    for kind in (aioiothub.IoTHubDeviceClient, aioiothub.IoTHubModuleClient):
        monkeypatch.setattr(kind, "__init__", _with_default_transport(kind.__init__, name))
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
