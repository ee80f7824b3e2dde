"""Runs one documentation code block in a process of its own, as a reader's program would.

``python -m tests.doc_block_child BLOCK.json`` reads ``{"code", "context"}`` and the environment a
user sets for the standalone emulator (``IOTHUB_DEVICE_CONNECTION_STRING``, ``SSL_CERT_FILE``,
``IOTHUB_PORT``) plus the harness's own ``DOCS_*`` variables, provides the names a fragment takes
as the reader's own (``conn_str``, ``client``, ``group_key`` …) and runs the block. Statements with
``await`` run on an event loop; a block without any runs as plain code, so that the blocks that
start their own loop (``asyncio.Runner``, ``anyio.run``) can.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aioiothub
from aioiothub import pnp
from aioiothub.emulator import Emulator

PORT = int(os.environ["IOTHUB_PORT"])


class _DeviceClient(aioiothub.IoTHubDeviceClient):
    """A device client whose connection-string constructors default to the emulator's port.

    What a reader writes as ``from_connection_string(conn_str)`` reaches the emulator unchanged;
    the CA comes from ``SSL_CERT_FILE``, as it would for the reader.
    """

    @classmethod
    def from_connection_string(cls, connection_string: str, **options: Any) -> Any:  # type: ignore[override]
        options.setdefault("port", PORT)
        return aioiothub.IoTHubDeviceClient.from_connection_string(connection_string, **options)

    @classmethod
    def from_sas_token(cls, token: str, **options: Any) -> Any:  # type: ignore[override]
        options.setdefault("port", PORT)
        return aioiothub.IoTHubDeviceClient.from_sas_token(token, **options)


class _ModuleClient(aioiothub.IoTHubModuleClient):
    @classmethod
    def from_connection_string(cls, connection_string: str, **options: Any) -> Any:  # type: ignore[override]
        options.setdefault("port", PORT)
        return aioiothub.IoTHubModuleClient.from_connection_string(connection_string, **options)


class _ProvisioningClient(aioiothub.ProvisioningClient):
    """DPS on the emulator's own listener instead of the global provisioning host."""

    @classmethod
    def from_enrollment_group_key(cls, **arguments: Any) -> Any:  # type: ignore[override]
        arguments.setdefault("provisioning_host", "localhost")
        arguments.setdefault("port", PORT)
        return aioiothub.ProvisioningClient.from_enrollment_group_key(**arguments)

    @classmethod
    def from_symmetric_key(cls, **arguments: Any) -> Any:  # type: ignore[override]
        arguments.setdefault("provisioning_host", "localhost")
        arguments.setdefault("port", PORT)
        return aioiothub.ProvisioningClient.from_symmetric_key(**arguments)


def _library() -> types.ModuleType:
    module = types.ModuleType("aioiothub")
    module.__dict__.update(vars(aioiothub))
    module.IoTHubDeviceClient = _DeviceClient  # type: ignore[attr-defined]
    module.IoTHubModuleClient = _ModuleClient  # type: ignore[attr-defined]
    module.ProvisioningClient = _ProvisioningClient  # type: ignore[attr-defined]
    return module


class _Metrics:
    def increment(self, name: str) -> None:
        print("metric", name, flush=True)


class _TokenService:
    async def fresh_token(self, device_id: str) -> str:
        # The block's "dev1" is the reader's device: here, the one the harness registered.
        return _token(os.environ["DOCS_DEVICE_ID"])


def _token(device_id: str) -> str:
    resource = f"localhost/devices/{device_id}"
    return aioiothub.generate_sas_token(resource, os.environ["DOCS_DEVICE_KEY"], int(time.time()) + 3600)


async def _store(body: bytes) -> None:
    print("stored", body, flush=True)


async def _main() -> None:  # what the asyncio.Runner blocks run
    print("main ran", flush=True)


def namespace() -> dict[str, Any]:
    """The names a fragment takes as the reader's own."""
    conn_str = os.environ["IOTHUB_DEVICE_CONNECTION_STRING"]
    device_id = os.environ["DOCS_DEVICE_ID"]
    return {
        "__name__": "__main__",
        "aioiothub": _library(),
        "pnp": pnp,
        "asyncio": asyncio,
        "os": os,
        "sys": sys,
        "subprocess": subprocess,
        "Emulator": Emulator,
        "conn_str": conn_str,
        "CONNECTION_STRING": conn_str,
        "module_conn_str": os.environ["DOCS_MODULE_CONNECTION_STRING"],
        "ca_file": os.environ["SSL_CERT_FILE"],
        "port": PORT,
        "key": os.environ["DOCS_ENROLLMENT_KEY"],  # sensor-1's, an individual DPS enrollment
        "group_key": os.environ["DOCS_GROUP_KEY"],
        "token": _token(device_id),
        "token_service": _TokenService(),
        "MODEL_ID": "dtmi:com:example:Thermostat;1",
        "store": _store,
        "metrics": _Metrics(),
        "alert": lambda error: print("alert", error, flush=True),
        "main": _main,
        "data": b"report",
    }


async def _run_async(code: Any, names: dict[str, Any], context: str) -> None:
    if context in ("with-client", "with-websocket-client"):
        # File upload goes to the hub's HTTPS port, which the emulator serves on its WebSocket port.
        options = {"port": int(os.environ["DOCS_WEBSOCKET_PORT"]), "websockets": True} if "websocket" in context else {}
        client = _DeviceClient.from_connection_string(names["conn_str"], **options)
        async with client:
            names["client"] = client
            print("client connected", flush=True)
            await _evaluate(code, names)
    elif context == "with-hub":
        async with Emulator(websocket_port=None) as hub:
            names["hub"] = hub
            await _evaluate(code, names)
    else:
        await _evaluate(code, names)


async def _evaluate(code: Any, names: dict[str, Any]) -> None:
    result: Callable[[], Any] | Awaitable[Any] | None = eval(code, names)
    if asyncio.iscoroutine(result):
        await result


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    names = namespace()
    # A block's own ``import aioiothub`` gets the same defaults (its submodules import as usual).
    sys.modules["aioiothub"] = names["aioiothub"]
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    code = compile(spec["code"], spec["name"], "exec", flags=flags)
    if code.co_flags & 0x80 or spec["context"].startswith("with-"):  # CO_COROUTINE: it awaits
        asyncio.run(_run_async(code, names, spec["context"]))
    else:
        exec(code, names)
    print("block finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
