"""Coverage-guided fuzzing of every parser of network input, with atheris (libFuzzer for Python).

Each target of ``benchmarks/fuzz_targets.py`` runs in a process of its own with the protocol core
instrumented for coverage, for ``--inputs`` inputs (default 1,000,000). A target that raises
anything but the library's own errors stops its run: the command prints the input that did it
(libFuzzer also writes it as ``crash-*`` into ``--artifacts``) and exits 1.

Usage::

    python benchmarks/fuzz.py [--inputs N] [--target NAME ...] [--json out.json]

atheris is installed into the running interpreter when it is missing (a wheel on Linux x86_64 for
CPython 3.11); where it cannot be installed the command says so and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_COVERAGE = re.compile(r"cov: (\d+) ft: (\d+)")


def ensure_atheris() -> None:
    """Import atheris, installing it with pip first when it is missing."""
    try:
        import atheris  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "atheris>=2.3"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if result.returncode != 0:
            print(f"atheris could not be installed here:\n{result.stdout}{result.stderr}", file=sys.stderr)
            sys.exit(2)


def _worker(name: str, inputs: int, artifacts: str) -> None:
    """Fuzz one target in this process (atheris takes the process over)."""
    import atheris

    with atheris.instrument_imports(include=["aioiothub"]):
        from benchmarks.fuzz_targets import EXPECTED, SEEDS, TARGETS
    target = TARGETS[name]
    corpus = Path(artifacts) / f"corpus-{name.replace(' ', '-')}"
    corpus.mkdir(exist_ok=True)
    for index, seed in enumerate(SEEDS.get(name, [])):
        (corpus / f"seed-{index}").write_bytes(seed)

    def one_input(data: bytes) -> None:
        with contextlib.suppress(EXPECTED):
            target(data)

    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={inputs}",
            "-max_len=4096",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


def _run(name: str, inputs: int, artifacts: Path) -> dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--inputs", str(inputs), "--artifacts", str(artifacts)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    done = _DONE.search(output)
    coverage = _COVERAGE.findall(output)
    runs = int(done.group(1)) if done else None
    return {
        "target": name,
        "ok": result.returncode == 0 and done is not None,
        "inputs": runs,
        "seconds": round(seconds, 1),
        "inputs_per_second": round(runs / seconds) if runs else None,
        "coverage": int(coverage[-1][0]) if coverage else None,
        "output": "" if result.returncode == 0 else output[-4000:],
    }


def main(argv: list[str] | None = None) -> int:
    """Fuzz the chosen targets (all by default) and print one row per target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--target", action="append", help="a target name (repeatable); default: all")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--artifacts", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    ensure_atheris()
    if arguments.worker:
        _worker(arguments.worker, arguments.inputs, arguments.artifacts)
        return 0
    from benchmarks.fuzz_targets import TARGETS

    names = arguments.target or sorted(TARGETS)
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; known: {sorted(TARGETS)}")
    with tempfile.TemporaryDirectory(prefix="aioiothub-fuzz-") as directory:
        results = []
        print(f"Coverage-guided fuzzing (atheris), {arguments.inputs:,} inputs per target")
        print(f"{'target':28} {'inputs':>11} {'seconds':>8} {'inputs/s':>9} {'coverage':>9}  result")
        for name in names:
            row = _run(name, arguments.inputs, Path(directory))
            results.append(row)
            print(
                f"{name:28} {row['inputs'] or 0:>11,} {row['seconds']:>8} {row['inputs_per_second'] or 0:>9,} "
                f"{row['coverage'] or 0:>9}  {'ok' if row['ok'] else 'FAILED'}",
                flush=True,
            )
            if not row["ok"]:
                print(row["output"], file=sys.stderr)
    if arguments.json:
        arguments.json.write_text(json.dumps({"benchmark": "fuzz", "results": results}, indent=2))
    return 0 if all(row["ok"] for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
