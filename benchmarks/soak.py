"""Soak: the reliability scenarios at scale, round after round, for as long as asked.

Each round runs, on every transport the client has (or the one given): chaos with 100,000 messages
and 200 in flight, 5,000 hostile connections, 1,000 connect/cancel cycles plus 200 clients x 5,
and five silent link cuts. Every round's figures are printed as it ends; the command exits 1 as
soon as a scenario's guarantee does not hold (lost or unacknowledged-yet-stored messages aside,
duplicates past the window, an await past its deadline, a leak, a late detection).

Usage::

    python benchmarks/soak.py [--minutes N] [--transport NAME] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

import anyio  # noqa: E402

from aioiothub.emulator import Emulator  # noqa: E402
from aioiothub.transports import TRANSPORT_NAMES  # noqa: E402
from benchmarks.reliability.chaos import deadline_bound, run_chaos  # noqa: E402
from benchmarks.reliability.half_open import run_half_open  # noqa: E402
from benchmarks.reliability.hostile import run_hostile  # noqa: E402
from benchmarks.reliability.leaks import run_leaks  # noqa: E402

IN_FLIGHT = 200
KEEPALIVE = 2


def _failures(name: str, report: Any) -> list[str]:
    problems: list[str] = []
    if name == "chaos":
        drops = report.events["drop"] + report.events["drop with refused reconnects"]
        if report.arrived != report.sent:
            problems.append(f"{report.sent - report.arrived} acknowledged messages missing")
        if report.duplicates > IN_FLIGHT * max(drops, 1):
            problems.append(f"{report.duplicates} duplicates for {drops} drops")
        if report.longest > deadline_bound():
            problems.append(f"a {report.slowest} took {report.longest:.1f} s")
        if not report.desired_matches:
            problems.append("the desired document differs")
    elif name == "hostile":
        if report.arrived < report.sent or report.honest_drops:
            problems.append("the honest device lost messages or its connection")
    elif name == "leaks":
        if report.fds[1] > report.fds[0] or report.threads[1] > report.threads[0] or report.tasks[1] > report.tasks[0]:
            problems.append("descriptors, threads or tasks grew")
        if report.pending_requests_seen:
            problems.append("twin requests were left pending")
    elif name == "half-open":
        late = [seconds for seconds in report.detections if seconds > 1.5 * KEEPALIVE + 0.75]
        if late or report.failed or report.arrived != report.sent:
            problems.append(f"late detections {late} or lost messages")
    return problems


async def soak(minutes: float, transports: list[str]) -> list[dict[str, Any]]:
    """Run rounds until ``minutes`` have passed; stop at the first broken guarantee."""
    deadline = time.monotonic() + 60 * minutes
    results: list[dict[str, Any]] = []
    round_number = 0
    while time.monotonic() < deadline:
        round_number += 1
        for transport in transports:
            seed = round_number
            scenarios = {
                "chaos": lambda hub, t=transport, s=seed: run_chaos(
                    hub, messages=100_000, in_flight=IN_FLIGHT, seed=s, transport=t
                ),
                "hostile": lambda hub, t=transport, s=seed: run_hostile(
                    hub, connections=5_000, concurrency=48, seed=s, transport=t
                ),
                "leaks": lambda hub, t=transport, s=seed: run_leaks(
                    hub, cycles=1_000, concurrent_clients=200, concurrent_cycles=5, seed=s, transport=t
                ),
                "half-open": lambda hub, t=transport: run_half_open(hub, cuts=5, keepalive=KEEPALIVE, transport=t),
            }
            for name, scenario in scenarios.items():
                async with Emulator() as hub:
                    report = await scenario(hub)
                problems = _failures(name, report)
                print(f"round {round_number} {transport} {name}: {report.summary()}", flush=True)
                results.append({"round": round_number, "transport": transport, "scenario": name,
                                "summary": report.summary(), "problems": problems})
                if problems:
                    print(f"  FAILED: {'; '.join(problems)}", flush=True)
                    return results
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print one line per scenario and round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to keep starting rounds")
    parser.add_argument("--transport", choices=TRANSPORT_NAMES, help="one transport (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    arguments = parser.parse_args(argv)
    transports = [arguments.transport] if arguments.transport else list(TRANSPORT_NAMES)
    results = anyio.run(soak, arguments.minutes, transports, backend="asyncio")
    if arguments.json:
        arguments.json.write_text(json.dumps({"benchmark": "soak", "results": results}, indent=2))
    return 1 if any(result["problems"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
