"""What every benchmark script shares: command line, statistics, tables, JSON output, worker processes.

Importing this module also puts the repository root on ``sys.path``, so that a benchmark started as
``python benchmarks/<name>.py`` from a plain checkout can import ``aioiothub``. Benchmark scripts
import it before anything from ``aioiothub``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

import _worker_base  # noqa: E402
import anyio  # noqa: E402
import anyio.abc  # noqa: E402
from anyio.streams.buffered import BufferedByteReceiveStream  # noqa: E402

AIO_WORKER = BENCH_DIR / "_aio_worker.py"
SDK_WORKER = BENCH_DIR / "_sdk_worker.py"
HUB_WORKER = BENCH_DIR / "_hub_worker.py"
SDK_PORT = 8883
"""azure-iot-device's MQTT transport always connects to 8883; it has no port option."""

_MAX_LINE = 256 * 1024 * 1024
_START_TIMEOUT = 120.0


# ------------------------------------------------------------------------------ libraries


@dataclass(frozen=True)
class Library:
    """One column of the benchmarks: a client library, how its worker builds it, on which loop.

    Attributes:
        label: the column's name.
        client: the ``library`` argument of the worker's ``connect`` (see ``_aio_worker.py``).
        transport: aioiothub's ``transport=``, for aioiothub columns.
        loop: ``"asyncio"`` or ``"uvloop"`` (the ``aioiothub[uvloop]`` extra).
        sdk: runs in the official SDK's own virtual environment (``_sdk_worker.py``).
    """

    label: str
    client: str
    transport: str | None = None
    loop: str = "asyncio"
    sdk: bool = False

    def available(self) -> str | None:
        """Why this library cannot run here, or ``None`` when it can."""
        needed = {"uvloop": self.loop == "uvloop", "gmqtt": self.client == "gmqtt"}
        for module, wanted in needed.items():
            if wanted and importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install {module})"
        return None

    def connect_arguments(self) -> dict[str, Any]:
        """The library-specific arguments of the worker's ``connect``."""
        return {"library": self.client, **({"transport": self.transport} if self.transport else {})}


AIOIOTHUB = Library("aioiothub[aiomqtt]", "aioiothub", "aiomqtt")
NATIVE = Library("aioiothub[native]", "aioiothub", "native")
NATIVE_UVLOOP = Library("aioiothub[native]+uvloop", "aioiothub", "native", loop="uvloop")
AIOMQTT = Library("aiomqtt", "aiomqtt")
GMQTT = Library("gmqtt", "gmqtt")
SDK = Library("azure-iot-device", "azure-iot-device", sdk=True)
RAW = Library("raw asyncio (limit)", "raw")


@asynccontextmanager
async def library_worker(library: Library, tag: str, log_dir: Path, peer_python: Path | None) -> AsyncIterator[Worker]:
    """A worker process holding ``library``'s clients."""
    if library.sdk:
        if peer_python is None:
            raise RuntimeError("the SDK's virtual environment was not prepared")
        python, script = peer_python, SDK_WORKER
    else:
        python, script = Path(sys.executable), AIO_WORKER
    async with run_worker(f"{tag}-{library.label}", python, script, log_dir, ["--loop", library.loop]) as worker:
        yield worker


# ------------------------------------------------------------------------------ command line


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has (``--smoke``, ``--json``)."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the benchmark runs")
    result.add_argument("--json", type=Path, metavar="PATH", help="also write the results to this JSON file")
    return result


def main(
    argv: list[str] | None,
    *,
    benchmark: str,
    description: str,
    settings: Callable[[argparse.Namespace], Any],
    run: Callable[[Any], Awaitable[dict[str, Any]]],
    report: Callable[[dict[str, Any]], str],
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """What every benchmark script's ``main`` does: parse, run on asyncio, print the tables, write JSON.

    Args:
        argv: the command line (``None``: ``sys.argv``).
        benchmark: the script's name, recorded in the JSON output.
        description: the script's docstring; its first line is the ``--help`` summary.
        settings: builds the run's settings from the parsed command line.
        run: measures; returns everything measured.
        report: the tables printed from what ``run`` returned.
        options: adds the script's own command-line options.
    """
    command_line = parser(description.splitlines()[0])
    if options is not None:
        options(command_line)
    arguments = command_line.parse_args(argv)
    results = anyio.run(run, settings(arguments), backend="asyncio")
    print(report(results))
    write_json(arguments.json, {"benchmark": benchmark, **results})
    return 0


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    """Write ``results`` (with a description of this machine) to ``path`` when it is given."""
    if path is None:
        return
    document = {"machine": machine(), **results}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"results written to {path}")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of ``values``, nearest-rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """The median, NaN when empty."""
    return statistics.median(values) if values else math.nan


def ratio(numerator: float | None, denominator: float | None) -> str:
    """``numerator / denominator`` as ``"1.23x"``, or ``"-"`` when either is missing or zero."""
    if numerator is None or denominator is None or not denominator or math.isnan(numerator) or math.isnan(denominator):
        return "-"
    return f"{numerator / denominator:.2f}x"


def number(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators, or ``"-"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        aligned = (cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True))
        return "  ".join([first.ljust(widths[0]), *aligned])

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([title, rule, line(headers), rule, *(line(row) for row in rows), rule])


# ---------------------------------------------------------------------------------- workers


class WorkerFailure(RuntimeError):
    """A worker answered with an error, went silent or died."""


class Worker:
    """One running benchmark worker process and its JSON-lines channel (see ``_worker_base``).

    Args:
        name: what the worker holds, for messages.
        process: the worker process.
        log_path: where its stderr goes.
    """

    def __init__(self, name: str, process: anyio.abc.Process, log_path: Path) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.name = name
        self.process = process
        self.log_path = log_path
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.hello: dict[str, Any] = {}

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the worker wrote to stderr."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "<no worker log>"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> WorkerFailure:
        return WorkerFailure(f"{self.name} worker: {what}\n--- worker log (tail) ---\n{self.log_tail()}")

    async def _read(self, seconds: float, what: str) -> dict[str, Any]:
        try:
            with anyio.fail_after(seconds):
                line = await self._stdout.receive_until(b"\n", _MAX_LINE)
        except TimeoutError:
            raise self.failure(f"no answer to {what} within {seconds:.0f} s") from None
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.ClosedResourceError, anyio.DelimiterNotFound):
            raise self.failure(f"exited while answering {what}") from None
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise self.failure(f"wrote {answer!r} for {what}")
        return answer

    async def call(self, op: str, *, seconds: float = 120.0, **arguments: Any) -> Any:
        """Send one command and return its result.

        Raises:
            WorkerFailure: the worker answered with an error, did not answer in time or exited.
        """
        try:
            await self._stdin.send((json.dumps({"op": op, **arguments}) + "\n").encode())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise self.failure(f"exited before {op}") from None
        answer = await self._read(seconds, op)
        if not answer.get("ok"):
            raise self.failure(f"{op} failed: {answer.get('error')}\n{answer.get('traceback', '')}")
        return answer.get("result")

    async def stop(self) -> None:
        """Close stdin (the worker's cue to close its clients and exit); kill it after 60 s."""
        with anyio.CancelScope(shield=True):
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._stdin.aclose()
            with anyio.move_on_after(60) as waiting:
                await self.process.wait()
            if waiting.cancelled_caught:
                self.process.kill()
                await self.process.wait()
            await self.process.aclose()


@asynccontextmanager
async def run_worker(
    name: str, python: Path | str, script: Path, log_dir: Path, arguments: Sequence[str] = ()
) -> AsyncIterator[Worker]:
    """Start a worker script under ``python`` and stop it when the block ends."""
    log_path = log_dir / f"{name.replace('/', '_').replace(' ', '_')}.log"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), str(REPO_ROOT)])}
    with log_path.open("ab") as log:
        process = await anyio.open_process(
            [str(python), str(script), *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=environment,
            cwd=str(BENCH_DIR),
        )
    worker = Worker(name, process, log_path)
    try:
        worker.hello = await worker._read(_START_TIMEOUT, "start-up")
        if not worker.hello.get("ready"):
            raise worker.failure(f"unexpected greeting {worker.hello!r}")
        yield worker
    finally:
        await worker.stop()


def verdict(value: float | None, target: float) -> str:
    """``"met"`` or ``"MISSED"`` against a lower bound (``"-"`` when not measured)."""
    if value is None or math.isnan(value):
        return "-"
    return "met" if value >= target else "MISSED"


def raise_open_files_limit(needed: int) -> str | None:
    """Raise this process's soft open-files limit towards ``needed``; a warning when it stays short."""
    limits = _worker_base.raise_open_files_limit(needed)
    if not limits["enough"]:
        return f"the open-files hard limit is {limits['hard']}, below the {needed} this size needs: expect failures"
    return None
