"""``aioiothub simulate`` and ``aioiothub merge-summaries`` as a user runs them, in subprocesses."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from aioiothub.emulator import Emulator
from aioiothub.simulator.stats import SUMMARY_MARKER
from tests.simulator.simulator_helpers import FLEET_KEY, QUICK, ROOT, SIMULATE, register_fleet, run


def summary_of(completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    # --json: stdout carries the summary alone (no progress display when it is not a terminal).
    assert len(lines) == 1, completed.stdout
    summary: dict[str, Any] = json.loads(lines[0])
    assert summary["kind"] == SUMMARY_MARKER
    return summary


@pytest.mark.parametrize("emulator", ["embedded", "process"])
def test_a_fleet_sends_every_message_and_stops(emulator: str) -> None:
    completed = run([*SIMULATE, "--devices", "20", "--messages", "3", *QUICK, "--emulator", emulator, "--json"])
    summary = summary_of(completed)
    counters = summary["counters"]
    assert summary["stopped_by"] == "messages"
    assert counters["devices"] == 20
    assert counters["connected"] == 20
    assert counters["sent"] == counters["acknowledged"] == 60
    assert counters["failed"] == 0
    assert counters["twin_reads"] == 20
    assert summary["send_latency_ms"]["p99"] > 0
    assert summary["send_latency_ms"]["count"] == 60
    assert 0 < summary["steady_send_latency_ms"]["count"] <= 60
    assert summary["peak_connected"] == 20
    assert summary["all_connected_after_s"] is not None
    assert "simulated 20 devices" in completed.stderr
    assert "\x1b[" not in completed.stdout + completed.stderr


def test_hold_keeps_the_full_fleet_for_that_long_then_stops() -> None:
    summary = summary_of(run([*SIMULATE, "--devices", "5", "--hold", "1.5", *QUICK, "--json"]))
    assert summary["stopped_by"] == "hold"
    assert summary["elapsed_s"] >= summary["all_connected_after_s"] + 1.5
    assert summary["counters"]["connected"] == 5


def test_worker_processes_share_the_fleet_and_the_back_end_reaches_every_kind_of_traffic() -> None:
    completed = run([
        *SIMULATE, "--devices", "20", "--processes", "2", "--duration", "9", *QUICK,
        "--method-rate", "10", "--desired-rate", "10", "--c2d-rate", "10", "--json",
    ])
    summary = summary_of(completed)
    counters = summary["counters"]
    assert summary["processes"] == 2
    assert summary["stopped_by"] == "duration"
    assert counters["devices"] == counters["connected"] == 20
    assert counters["failed"] == 0
    assert counters["acknowledged"] > 0
    assert counters["backend_methods_ok"] > 0
    assert counters["backend_methods_failed"] == 0
    # The back end has its 200 once the hub relays the answer; the device counts it when its PUBACK
    # returns. At the stop each device may have one answer between the two (it answers in turn).
    assert counters["methods_answered"] >= counters["backend_methods_ok"] - counters["devices"]
    assert counters["backend_desired_updates"] > 0
    assert counters["desired_acknowledged"] > 0
    assert counters["backend_c2d_sent"] > 0
    assert counters["c2d_received"] > 0


def test_shards_take_their_index_range_from_the_environment_and_their_summaries_merge(tmp_path: Path) -> None:
    log = tmp_path / "pods.log"
    lines = ["a log line that is not a summary"]
    for shard in ("0", "1"):
        completed = run(
            [*SIMULATE, "--devices", "5", "--messages", "1", *QUICK, "--shard-index", "env:JOB_COMPLETION_INDEX",
             "--json"],
            environment={"JOB_COMPLETION_INDEX": shard},
        )
        summary = summary_of(completed)
        assert summary["settings"]["start_index"] == 5 * int(shard)
        lines.append(completed.stdout.strip())
    log.write_text("\n".join(lines) + "\n")
    merged = run([sys.executable, "-m", "aioiothub", "merge-summaries", str(log), "--json"])
    assert merged.returncode == 0, merged.stderr
    result = json.loads(merged.stdout)
    assert result["shards"] == 2
    assert result["counters"]["devices"] == 10
    assert result["counters"]["acknowledged"] == 10
    text = run([sys.executable, "-m", "aioiothub", "merge-summaries", str(log)])
    assert "2 shards" in text.stdout
    assert "simulated 10 devices" in text.stdout


@pytest.mark.anyio
async def test_ctrl_c_stops_the_run_cleanly_with_the_summary(tmp_path: Path) -> None:
    devices = [f"pod-{index}" for index in range(5)]
    async with Emulator(websocket_port=None) as hub:
        register_fleet(hub, devices)
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(hub.ca_pem)
        async with await anyio.open_process(
            [*SIMULATE, "--hub", hub.hostname, "--connect-host", hub.host, "--port", str(hub.port),
             "--ca-file", str(ca_file), "--prefix", "pod-", "--devices", "5", "--interval", "0.1", "--json"],
            cwd=ROOT, env={**os.environ, "AIOIOTHUB_FLEET_KEY": FLEET_KEY},
        ) as process:
            for device_id in devices:
                await hub.wait_connected(device_id, timeout=60)
            await hub.wait_for_telemetry(10, timeout=60)
            process.send_signal(signal.SIGINT)
            assert process.stdout is not None
            output = b"".join([chunk async for chunk in process.stdout])
            with anyio.fail_after(60):
                await process.wait()
    assert process.returncode == 0
    summary = json.loads(output.decode().strip())
    assert summary["stopped_by"] == "interrupted"
    assert summary["counters"]["connected"] == 5
    assert summary["counters"]["acknowledged"] >= 10
    assert summary["counters"]["failed"] == 0


@pytest.mark.anyio
async def test_a_fleet_the_hub_refuses_stops_by_itself_and_fails(tmp_path: Path) -> None:
    async with Emulator(websocket_port=None) as hub:
        register_fleet(hub, ["sim-0", "sim-1"])
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(hub.ca_pem)
        wrong_key = "AAAA" + FLEET_KEY[4:]
        arguments = [
            *SIMULATE, "--hub", hub.hostname, "--connect-host", hub.host, "--port", str(hub.port),
            "--ca-file", str(ca_file), "--devices", "2", "--json", "--fleet-key", wrong_key,
        ]
        completed = await anyio.run_process(arguments, cwd=ROOT, check=False)
    assert completed.returncode == 1, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["stopped_by"] == "every device lost"
    assert summary["counters"]["devices_lost"] == 2
    assert b"was refused" in completed.stderr


@pytest.mark.anyio
async def test_the_summary_says_why_the_devices_failed(tmp_path: Path) -> None:
    async with Emulator(websocket_port=None) as hub:
        register_fleet(hub, ["sim-0", "sim-1"])
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(hub.ca_pem)
        arguments = [
            *SIMULATE, "--hub", hub.hostname, "--connect-host", hub.host, "--port", str(hub.port),
            "--ca-file", str(ca_file), "--devices", "2", "--json", "--fleet-key", "AAAA" + FLEET_KEY[4:],
        ]
        completed = await anyio.run_process(arguments, cwd=ROOT, check=False)
    assert completed.returncode == 1, completed.stderr
    reasons = json.loads(completed.stdout)["failure_reasons"]
    # Both devices were refused for the same reason: one entry, counted twice, with the error's type and text.
    assert set(reasons) == {"connect_failures", "devices_lost"}
    [(reason, count)] = reasons["connect_failures"].items()
    assert count == 2
    assert reason.startswith("AuthenticationError: ")
    assert len(reason) > len("AuthenticationError: ")
    assert f"failed because  2x connects: {reason}" in completed.stderr.decode()


def test_a_terminal_gets_the_live_progress_display() -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*SIMULATE, "--devices", "5", "--messages", "3", *QUICK],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    while True:
        ready, _, _ = select.select([controller], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            process.kill()
            raise AssertionError(f"no end of output within 60 s:\n{output.decode(errors='replace')}")
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal's other end closed
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = output.decode(errors="replace")
    assert "messages/s" in text
    assert "send latency p99" in text
    assert "5 / 5" in text
    assert "simulated 5 devices" in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--devices", "0"], "--devices must be at least 1"),
        (["--template", '{"x": $.Nope}'], "undeclared variables: $.Nope"),
        (["--hub", "example.azure-devices.net"], "--hub needs the fleet key"),
        (["--port", "8883"], "--port is for --hub"),
        (["--property", "novalue"], "--property must be NAME=VALUE"),
        (["--shard-index", "env:NO_SUCH_VARIABLE_HERE"], "NO_SUCH_VARIABLE_HERE is not set"),
        (["--processes", "3", "--devices", "2"], "processes must be from 1 to the number of devices"),
        (["--qos", "1", "--interval", "0"], "interval must be a positive number"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(arguments: list[str], message: str) -> None:
    completed = run([*SIMULATE, *arguments], environment={"AIOIOTHUB_FLEET_KEY": ""})
    assert completed.returncode == 2
    assert message in completed.stderr
