"""Peer tests: the official ``azure-iot-device`` SDK against the emulator.

Each test starts an emulator on port 8883 (the SDK cannot connect anywhere else) and one SDK client
in the peer venv, driven through ``sdk_device.py`` / ``sdk_module.py`` over JSON lines, then checks
what both sides saw. When they disagree, the wire reference (``protocol.md``) and the SDK's
behaviour decide, not the emulator.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from aioiothub.emulator import Emulator

pytestmark = [pytest.mark.peer, pytest.mark.anyio]

SDK_PORT = 8883
"""The SDK's MQTT transport hard-codes 8883 (443 for WebSockets); it has no port option."""

HERE = Path(__file__).resolve().parent
DEVICE_SCRIPT = HERE / "sdk_device.py"
MODULE_SCRIPT = HERE / "sdk_module.py"

START_TIMEOUT = 60.0
"""Importing the SDK on a busy two-core machine can take a while."""
COMMAND_TIMEOUT = 30.0
EVENT_TIMEOUT = 15.0
MAX_LINE = 4 * 1024 * 1024


class PeerFailure(AssertionError):
    """The SDK driver reported an error, went silent or died."""


class SdkPeer:
    """One running SDK driver process and its JSON-lines channel.

    Args:
        process: the driver process.
        log_path: where the driver's stderr (SDK and paho logs) goes.
    """

    def __init__(self, process: anyio.abc.Process, log_path: Path) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self.log_path = log_path
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.hello: dict[str, Any] = {}

    def log_tail(self, lines: int = 80) -> str:
        """The last lines the driver wrote to stderr, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "<no driver log>"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> PeerFailure:
        return PeerFailure(f"{what}\n--- SDK driver log (tail) ---\n{self.log_tail()}")

    async def _read_line(self, seconds: float, what: str) -> dict[str, Any]:
        try:
            with anyio.fail_after(seconds):
                line = await self._stdout.receive_until(b"\n", MAX_LINE)
        except TimeoutError:
            raise self.failure(f"SDK driver gave no answer to {what} within {seconds:.0f} s") from None
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.ClosedResourceError, anyio.DelimiterNotFound):
            raise self.failure(f"SDK driver exited while answering {what}") from None
        try:
            answer = json.loads(line)
        except ValueError:
            raise self.failure(f"SDK driver wrote a line that is not JSON for {what}: {line!r}") from None
        if not isinstance(answer, dict):
            raise self.failure(f"SDK driver wrote {answer!r} for {what}")
        return answer

    async def wait_ready(self) -> None:
        """Wait for the driver's greeting (SDK imported and ready for commands)."""
        self.hello = await self._read_line(START_TIMEOUT, "start-up")
        if not self.hello.get("ready"):
            raise self.failure(f"unexpected greeting {self.hello!r}")

    async def call(self, op: str, *, seconds: float = COMMAND_TIMEOUT, **arguments: Any) -> Any:
        """Send one command and return its result.

        The driver gets ``seconds`` to finish the SDK call; this side waits a little longer so the
        driver's own error, not a bare timeout, is what a failure shows.

        Raises:
            PeerFailure: the driver answered with an error, did not answer in time or exited.
        """
        command = {"op": op, "timeout": seconds, **arguments}
        try:
            await self._stdin.send((json.dumps(command) + "\n").encode("utf-8"))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise self.failure(f"SDK driver exited before {op}") from None
        answer = await self._read_line(seconds + 10, op)
        if not answer.get("ok"):
            raise self.failure(f"SDK {op} failed: {answer.get('error')}\n{answer.get('traceback', '')}")
        return answer.get("result")

    async def next_event(self, kind: str, seconds: float = EVENT_TIMEOUT) -> Any:
        """The oldest unclaimed event of ``kind`` ("message", "method", "twin_patch")."""
        return await self.call("next_event", kind=kind, seconds=seconds)

    async def shutdown(self) -> dict[str, Any]:
        """Shut the SDK client down and return the driver's report of background trouble."""
        report: dict[str, Any] = await self.call("shutdown", seconds=20)
        return report

    async def stop(self) -> None:
        """End the driver process, killing it if it has not exited within 10 s.

        Closing stdin is the driver's cue to shut its client down and exit.
        """
        with anyio.CancelScope(shield=True):
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._stdin.aclose()
            with anyio.move_on_after(10) as waiting:
                await self.process.wait()
            if waiting.cancelled_caught:
                self.process.kill()
            await self.process.aclose()


@asynccontextmanager
async def run_peer(
    python: Path, script: Path, log_path: Path, *, connection_string: str, ca_pem: bytes, handlers: list[str]
) -> AsyncIterator[SdkPeer]:
    """Start a driver, connect its client, and on exit check it saw no unexpected trouble."""
    with log_path.open("wb") as log:
        process = await anyio.open_process(
            [str(python), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
        )
    peer = SdkPeer(process, log_path)
    try:
        await peer.wait_ready()
        await peer.call(
            "connect", connection_string=connection_string, ca_pem=ca_pem.decode("ascii"), handlers=handlers
        )
        yield peer
        report = await peer.shutdown()
        assert report == {"unexpected_disconnects": 0, "background_errors": []}, peer.failure(
            f"the SDK saw trouble during the test: {report}"
        )
    except Exception:
        # pytest shows the captured output of failing tests only: the SDK's side of the story.
        print(f"--- SDK driver log {log_path} (tail) ---\n{peer.log_tail()}")
        raise
    finally:
        await peer.stop()


class PeerLauncher:
    """Starts SDK drivers for one test; they are shut down (and checked) when the test ends."""

    def __init__(self, python: Path, hub: Emulator, stack: AsyncExitStack, log_dir: Path) -> None:
        self._python = python
        self._hub = hub
        self._stack = stack
        self._log_dir = log_dir

    async def device(self, device_id: str, *, handlers: tuple[str, ...] = ()) -> SdkPeer:
        """An ``IoTHubDeviceClient`` connected as ``device_id`` with the given receive handlers."""
        identity = self._hub.identity(device_id)
        return await self._start(DEVICE_SCRIPT, identity.connection_string, f"{device_id}.log", handlers)

    async def module(self, device_id: str, module_id: str, *, handlers: tuple[str, ...] = ()) -> SdkPeer:
        """An ``IoTHubModuleClient`` connected as ``device_id/module_id``."""
        identity = self._hub.identity(device_id, module_id)
        return await self._start(MODULE_SCRIPT, identity.connection_string, f"{device_id}-{module_id}.log", handlers)

    async def _start(self, script: Path, connection_string: str, log_name: str, handlers: tuple[str, ...]) -> SdkPeer:
        return await self._stack.enter_async_context(
            run_peer(
                self._python,
                script,
                self._log_dir / log_name,
                connection_string=connection_string,
                ca_pem=self._hub.ca_pem,
                handlers=list(handlers),
            )
        )


@pytest.fixture
async def hub() -> AsyncIterator[Emulator]:
    """An emulator on the SDK's fixed port with device ``dev1`` registered."""
    async with Emulator(hostname="localhost", host="127.0.0.1", port=SDK_PORT, websocket_port=None) as emulator:
        emulator.add_device("dev1")
        yield emulator


@pytest.fixture
async def peers(peer_python: Path, hub: Emulator, tmp_path: Path) -> AsyncIterator[PeerLauncher]:
    """Starts SDK drivers against ``hub``; they are shut down before the emulator stops."""
    async with AsyncExitStack() as stack:
        yield PeerLauncher(peer_python, hub, stack, tmp_path)


async def wait_until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Wait for ``condition()`` to hold, checking it between short pauses, or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")
        await anyio.sleep(0.02)


def received_body(event: dict[str, Any]) -> bytes:
    """The exact body bytes of a ``message`` event."""
    return base64.b64decode(event["data_b64"])


# --- device-to-cloud ------------------------------------------------------------------------------


async def test_telemetry_with_custom_and_system_properties(hub: Emulator, peers: PeerLauncher) -> None:
    peer = await peers.device("dev1")

    await peer.call(
        "send_message",
        body='{"temperature": 21.5}',
        message_id="msg-0001",
        correlation_id="corr/7 + x",
        content_type="application/json",
        content_encoding="utf-8",
        # Space, slash, plus and percent: each must survive the SDK's percent-encoding intact.
        custom_properties={"alert": "true", "zone name": "north/east+1", "ratio": "50%"},
    )
    await peer.call("send_message", body="plain")

    first, second = await hub.wait_for_telemetry(2, device_id="dev1")
    assert first.device_id == "dev1"
    assert first.module_id is None
    assert first.body == b'{"temperature": 21.5}'
    assert first.json() == {"temperature": 21.5}
    assert dict(first.properties) == {"alert": "true", "zone name": "north/east+1", "ratio": "50%"}
    assert dict(first.system_properties) == {
        "$.mid": "msg-0001",
        "$.cid": "corr/7 + x",
        "$.ct": "application/json",
        "$.ce": "utf-8",
    }
    # A message with no properties goes to the bare events topic.
    assert second.body == b"plain"
    assert dict(second.properties) == {}
    assert dict(second.system_properties) == {}
    assert len(hub.telemetry("dev1")) == 2

    identity = hub.identity("dev1")
    assert identity.product_info is not None
    assert identity.product_info.startswith(f"azure-iot-device-iothub-py/{peer.hello['sdk_version']}")


# --- cloud-to-device ------------------------------------------------------------------------------


async def test_c2d_message_with_properties(hub: Emulator, peers: PeerLauncher) -> None:
    peer = await peers.device("dev1", handlers=("message",))
    body = b"hello \x00\xff device"

    message_id = await hub.send_c2d(
        "dev1",
        body,
        properties={"k": "v", "space key": "a b+c/d", "empty": ""},
        message_id="m1",
        correlation_id="c1",
        content_type="application/octet-stream",
        content_encoding="binary",
    )

    event = await peer.next_event("message")
    assert message_id == "m1"
    assert received_body(event) == body
    assert event["message_id"] == "m1"
    assert event["correlation_id"] == "c1"
    assert event["content_type"] == "application/octet-stream"
    assert event["content_encoding"] == "binary"
    assert event["ack"] == "none"
    assert event["expiry_time_utc"] is not None
    assert event["input_name"] is None
    # The SDK files every key it does not know as a custom property: nothing but ours may show up.
    assert event["custom_properties"] == {"k": "v", "space key": "a b+c/d", "empty": ""}
    # The SDK acknowledged the message, so the hub's queue empties.
    await wait_until(lambda: hub.c2d_queue_length("dev1") == 0, "the hub to see the PUBACK")


# --- twin -----------------------------------------------------------------------------------------


async def test_twin_get_shows_desired_properties(hub: Emulator, peers: PeerLauncher) -> None:
    version = await hub.update_desired("dev1", {"interval": 5, "mode": {"level": "high", "on": True}})
    peer = await peers.device("dev1")

    twin = await peer.call("get_twin")

    assert twin["desired"] == {"interval": 5, "mode": {"level": "high", "on": True}, "$version": version}
    assert twin["reported"] == {"$version": hub.twin("dev1")["reported"]["$version"]}
    assert twin == hub.twin("dev1")


async def test_reported_patch_updates_hub_twin(hub: Emulator, peers: PeerLauncher) -> None:
    peer = await peers.device("dev1")
    before = hub.twin("dev1")["reported"]["$version"]

    await peer.call("patch_reported", patch={"firmware": "1.2.3", "battery": {"level": 87, "charging": False}})
    assert hub.twin("dev1")["reported"] == {
        "firmware": "1.2.3",
        "battery": {"level": 87, "charging": False},
        "$version": before + 1,
    }

    # A merge patch: null deletes, other keys are replaced or kept.
    await peer.call("patch_reported", patch={"battery": None, "firmware": "1.2.4", "uptime": 12})
    assert hub.twin("dev1")["reported"] == {"firmware": "1.2.4", "uptime": 12, "$version": before + 2}

    twin = await peer.call("get_twin")
    assert twin["reported"] == hub.twin("dev1")["reported"]


async def test_desired_patch_notification(hub: Emulator, peers: PeerLauncher) -> None:
    await hub.update_desired("dev1", {"interval": 5, "mode": "eco"})
    peer = await peers.device("dev1", handlers=("twin_patch",))

    first = await hub.update_desired("dev1", {"interval": 10, "mode": None})
    second = await hub.update_desired("dev1", {"threshold": {"high": 30}})

    assert await peer.next_event("twin_patch") == {"interval": 10, "mode": None, "$version": first}
    assert await peer.next_event("twin_patch") == {"threshold": {"high": 30}, "$version": second}
    assert second == first + 1
    twin = await peer.call("get_twin")
    assert twin["desired"] == {"interval": 10, "threshold": {"high": 30}, "$version": second}


# --- direct methods -------------------------------------------------------------------------------


async def test_direct_method_round_trip(hub: Emulator, peers: PeerLauncher) -> None:
    peer = await peers.device("dev1", handlers=("method",))

    await peer.call("set_method_response", status=201, payload={"rebooted": True, "after": [1, 2]})
    result = await hub.invoke_method("dev1", "reboot", {"delay": 1}, timeout=20)
    request = await peer.next_event("method")
    assert request["name"] == "reboot"
    assert request["payload"] == {"delay": 1}
    assert request["request_id"]
    assert result.status == 201
    assert result.payload == {"rebooted": True, "after": [1, 2]}

    # A component command with no payload, answered with no payload.
    await peer.call("set_method_response", status=404, payload=None)
    result = await hub.invoke_method("dev1", "thermostat*getMaxMinReport", None, timeout=20)
    request = await peer.next_event("method")
    assert request["name"] == "thermostat*getMaxMinReport"
    assert request["payload"] is None
    assert result.status == 404
    assert result.payload is None


# --- modules --------------------------------------------------------------------------------------


async def test_module_output_and_input_messages(hub: Emulator, peers: PeerLauncher) -> None:
    hub.add_module("dev1", "mod1")
    peer = await peers.module("dev1", "mod1", handlers=("message",))

    await peer.call(
        "send_message",
        body="filtered reading",
        output_name="output1",
        message_id="out-1",
        custom_properties={"source": "sensor 2"},
    )
    (record,) = await hub.wait_for_telemetry(1, device_id="dev1", module_id="mod1")
    assert record.device_id == "dev1"
    assert record.module_id == "mod1"
    assert record.body == b"filtered reading"
    assert dict(record.system_properties) == {"$.on": "output1", "$.mid": "out-1"}
    assert dict(record.properties) == {"source": "sensor 2"}

    message_id = await hub.send_to_input("dev1", "mod1", "input1", b"data", properties={"k": "v w"})
    event = await peer.next_event("message")
    assert event["input_name"] == "input1"
    assert received_body(event) == b"data"
    assert event["message_id"] == message_id
    assert event["custom_properties"] == {"k": "v w"}
    await wait_until(lambda: hub.c2d_queue_length("dev1", "mod1") == 0, "the hub to see the PUBACK")
