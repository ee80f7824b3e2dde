"""``--outbox DIR``: the fleet's telemetry goes through durable outboxes, and the backlog is shown."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from aioiothub.emulator import Emulator
from aioiothub.simulator.fleet import outbox_file, run_devices
from aioiothub.simulator.progress import LiveProgress, format_summary
from aioiothub.simulator.stats import FleetStats, merge_snapshots, summarize
from aioiothub.simulator.traffic import TrafficSettings
from tests.simulator.simulator_helpers import QUICK, SIMULATE, endpoint_of, register_fleet, run
from tests.simulator.test_cli import summary_of

DEVICES = [f"sim-{index}" for index in range(3)]
MESSAGES = 40
TRAFFIC = TrafficSettings(interval=0.05, jitter=0.0, messages=MESSAGES, template='{"n": $.Counter}', variables="[]")


@pytest.mark.anyio
async def test_messages_sent_while_the_hub_is_away_all_arrive_and_the_backlog_is_counted(tmp_path: Path) -> None:
    async with Emulator(websocket_port=None) as hub:
        register_fleet(hub, DEVICES)
        # A send without an outbox would fail after this long with the hub away.
        endpoint = dataclasses.replace(endpoint_of(hub), request_timeout=0.5)
        stats, stop = FleetStats(), anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(functools.partial(
                run_devices, endpoint, DEVICES, TRAFFIC, stats, stop=stop, outbox=outbox_file(str(tmp_path), 0),
            ))
            for device_id in DEVICES:
                await hub.wait_for_telemetry(1, device_id=device_id, timeout=30)
            # The outage: every connection dropped, every reconnect refused until the backlog has grown.
            hub.faults.refuse_connects(1_000_000)
            for device_id in DEVICES:
                hub.drop_connection(device_id)
            with anyio.fail_after(30):  # the devices keep sending: their counters change every 50 ms
                await stats.wait_until(lambda _: stats.snapshot()["counters"]["outbox_pending"] >= 15)
            during = stats.snapshot()
            hub.faults.refuse_connects(0)
            with anyio.fail_after(60):
                await stats.wait_until(lambda counters: counters["finished"] == len(DEVICES))
            after = stats.snapshot()
            stop.set()
        final = stats.snapshot()

        for device_id in DEVICES:
            numbers = [json.loads(record.body)["n"] for record in hub.telemetry(device_id)]
            first_seen = list(dict.fromkeys(numbers))
            assert first_seen == list(range(1, MESSAGES + 1)), device_id
    assert during["counters"]["outbox_pending"] >= 15
    assert during["outbox_oldest_age_s"] is not None
    assert during["outbox_oldest_age_s"] > 0
    assert stats.counters["failed"] == 0
    assert stats.counters["reconnects"] >= len(DEVICES)
    total = len(DEVICES) * MESSAGES
    # A device is finished once its outbox is empty: everything delivered then, nothing pending.
    assert after["counters"]["outbox_delivered"] == total
    assert after["counters"]["outbox_pending"] == 0
    assert after["outbox_oldest_age_s"] is None
    # And the figures stay once the clients have closed.
    assert final["counters"]["outbox_delivered"] == total
    assert final["counters"]["outbox_pending"] == 0
    assert final["counters"]["outbox_expired"] == final["counters"]["outbox_dropped"] == 0


def test_the_live_view_shows_the_backlog_and_the_summary_what_became_of_it() -> None:
    snapshot = merge_snapshots([
        {"counters": {"devices": 2, "outbox_pending": 120, "outbox_delivered": 30}, "outbox_oldest_age_s": 4.25},
        {"counters": {"devices": 2, "outbox_pending": 5, "outbox_dropped": 7}, "outbox_oldest_age_s": 9.5},
    ])
    assert snapshot["counters"]["outbox_pending"] == 125
    assert snapshot["outbox_oldest_age_s"] == 9.5  # the oldest of any process

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with LiveProgress(console, title=lambda: "fleet", target=4, duration=None, backend=False, outbox=True) as live:
        live.update(snapshot, 1.0)
    shown = " ".join(screen.getvalue().split())
    assert "outbox backlog 125 oldest pending 9.5 s" in shown
    assert "outbox delivered 30 expired / dropped 0 / 7" in shown

    text = format_summary(summarize(snapshot, elapsed=2.0, settings={"outbox": "/tmp/fleet"}))
    assert "outbox          30 delivered, 0 expired, 7 dropped, 125 still pending at the end (in /tmp/fleet)" in text


def test_without_an_outbox_the_live_view_and_the_summary_have_no_outbox_lines() -> None:
    snapshot = FleetStats().snapshot()
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with LiveProgress(console, title=lambda: "fleet", target=1, duration=None, backend=False) as live:
        live.update(snapshot, 1.0)
    assert "outbox" not in screen.getvalue()
    assert "outbox" not in format_summary(summarize(snapshot, elapsed=1.0))


def test_the_outbox_option_gives_each_worker_process_its_file(tmp_path: Path) -> None:
    directory = tmp_path / "outboxes"  # created by the run
    completed = run([
        *SIMULATE, "--devices", "4", "--processes", "2", "--messages", "3", *QUICK,
        "--outbox", str(directory), "--json",
    ])
    summary = summary_of(completed)
    counters = summary["counters"]
    assert summary["stopped_by"] == "messages"
    assert counters["sent"] == counters["acknowledged"] == counters["outbox_delivered"] == 12
    assert counters["outbox_pending"] == counters["failed"] == 0
    assert summary["settings"]["outbox"] == str(directory)
    assert sorted(path.name for path in directory.glob("*.db")) == ["outbox-0.db", "outbox-1.db"]
    assert "outbox          12 delivered, 0 expired, 0 dropped, 0 still pending at the end" in completed.stderr


def test_the_outbox_option_needs_qos_1(tmp_path: Path) -> None:
    completed = run([*SIMULATE, "--outbox", str(tmp_path), "--qos", "0"])
    assert completed.returncode == 2
    assert "--outbox needs --qos 1" in completed.stderr
