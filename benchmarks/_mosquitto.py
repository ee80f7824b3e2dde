"""A real Eclipse Mosquitto broker with TLS listeners on loopback, started and stopped by a benchmark.

:func:`mosquitto_executable` finds the Debian ``mosquitto`` binary, installing the package with
``apt-get`` when it is missing and this process may (root on a Debian-like system); otherwise it
raises :class:`MosquittoUnavailable` saying why. :class:`Mosquitto` writes a throw-away
configuration (TLS listeners with a server certificate for ``localhost`` issued by the given CA,
``allow_anonymous true``, no persistence), runs the broker as a child process and stops it on exit.
The broker ignores the IoT Hub style user names and SAS passwords the clients send.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from aioiothub.emulator.certs import CertificateAuthority

__all__ = ["Mosquitto", "MosquittoUnavailable", "mosquitto_executable"]

_SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin")
_APT_TIMEOUT = 600.0
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0


class MosquittoUnavailable(RuntimeError):
    """mosquitto is not installed and could not be installed, or it would not start."""


def _find() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for directory in _SEARCH_PATH:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _apt(*arguments: str) -> None:
    command = ["apt-get", *arguments]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT,
            check=False,
            env=environment,
        )
    except subprocess.TimeoutExpired:
        raise MosquittoUnavailable(f"{' '.join(command)} timed out after {_APT_TIMEOUT:.0f} s") from None
    if result.returncode != 0:
        raise MosquittoUnavailable(
            f"{' '.join(command)} failed with exit status {result.returncode}:\n{result.stdout[-2000:]}"
            f"{result.stderr[-2000:]}"
        )


def mosquitto_executable(*, install: bool = True) -> str:
    """The path of the ``mosquitto`` broker, installed with ``apt-get`` first if needed and allowed.

    Raises:
        MosquittoUnavailable: it is not installed and cannot be (not root, no apt-get, apt failed).
    """
    found = _find()
    if found:
        return found
    if not install:
        raise MosquittoUnavailable("mosquitto is not installed (apt-get install -y mosquitto)")
    if shutil.which("apt-get") is None:
        raise MosquittoUnavailable("mosquitto is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise MosquittoUnavailable("mosquitto is not installed; run as root or: sudo apt-get install -y mosquitto")
    _apt("update")
    _apt("install", "-y", "--no-install-recommends", "mosquitto")
    found = _find()
    if not found:
        raise MosquittoUnavailable("apt-get installed mosquitto but no mosquitto binary is on PATH or in /usr/sbin")
    return found


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Mosquitto:
    """A mosquitto broker with one TLS listener per port in ``ports``, all on 127.0.0.1.

    Args:
        authority: the CA that issues the broker's certificate (for ``localhost`` and ``127.0.0.1``).
        ports: the TLS listener ports.
        executable: the broker binary (see :func:`mosquitto_executable`).
    """

    def __init__(self, authority: CertificateAuthority, ports: list[int], executable: str) -> None:
        if not ports:
            raise ValueError("ports must name at least one port")
        self.ports = list(ports)
        self._authority = authority
        self._executable = executable
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.version = ""

    def _write_files(self, directory: Path) -> Path:
        cert_pem, key_pem = self._authority.issue_server_certificate(["localhost", "127.0.0.1"])
        files = {"ca.pem": self._authority.certificate_pem, "server.pem": cert_pem, "server.key": key_pem}
        for name, data in files.items():
            (directory / name).write_bytes(data)
            (directory / name).chmod(0o600)
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # Started as root, mosquitto would switch to the 'mosquitto' user, who cannot read the key.
            *(["user root"] if os.geteuid() == 0 else []),
        ]
        for port in self.ports:
            lines += [
                f"listener {port} 127.0.0.1",
                f"cafile {directory / 'ca.pem'}",
                f"certfile {directory / 'server.pem'}",
                f"keyfile {directory / 'server.key'}",
                "tls_version tlsv1.2",
            ]
        config = directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return config

    def __enter__(self) -> Self:
        busy = [port for port in self.ports if _port_open(port)]
        if busy:
            raise MosquittoUnavailable(f"port(s) {busy} on 127.0.0.1 are already in use")
        self._directory = tempfile.TemporaryDirectory(prefix="aioiothub-mosquitto-")
        directory = Path(self._directory.name)
        config = self._write_files(directory)
        log = (directory / "mosquitto.log").open("wb")
        self._process = subprocess.Popen(
            [self._executable, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not all(_port_open(port) for port in self.ports):
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = (directory / "mosquitto.log").read_text(errors="replace")
                self.__exit__(None, None, None)
                raise MosquittoUnavailable(f"mosquitto did not start listening on {self.ports}:\n{output}")
            time.sleep(0.05)
        version = subprocess.run([self._executable, "-h"], capture_output=True, text=True, check=False, timeout=10)
        self.version = (version.stdout or version.stderr).splitlines()[0] if (version.stdout or version.stderr) else ""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT)
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return None if self._process is None else self._process.pid
