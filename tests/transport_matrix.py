"""Running client integration tests once per transport (``[aiomqtt]`` and ``[native]``).

A conftest that wants it defines ``pytest_generate_tests`` with :func:`parametrize_transport` and a
``transport`` fixture that calls :func:`use_transport`: for the duration of a test the client
constructors' default ``transport=`` is that test's transport, so every client the test builds,
directly or through a helper, uses it. ``AIOIOTHUB_TEST_TRANSPORTS=aiomqtt`` (a comma-separated
list) restricts a run to some of them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import pytest

import aioiothub
from aioiothub.transports import TRANSPORT_NAMES


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


def parametrize_transport(metafunc: pytest.Metafunc) -> None:
    """Run ``metafunc``'s test once per selected transport, when it uses the ``transport`` fixture."""
    if "transport" in metafunc.fixturenames:
        names = selected_transports()
        metafunc.parametrize("transport", names, indirect=True, ids=names)


def _with_default_transport(init: Callable[..., None], name: str) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **options: Any) -> None:
        options.setdefault("transport", name)
        init(self, *args, **options)

    return wrapper


def use_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Make the parametrized transport the client constructors' default for this test; returns its
    name (``None`` for a test that was not parametrized)."""
    name: str | None = getattr(request, "param", None)
    if name is None:
        return None
    for kind in (aioiothub.IoTHubDeviceClient, aioiothub.IoTHubModuleClient):
        monkeypatch.setattr(kind, "__init__", _with_default_transport(kind.__init__, name))
    return name
