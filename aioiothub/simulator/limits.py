"""Process limits a fleet runs into: open files (one socket per device connection)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import resource

__all__ = ["raise_open_file_limit", "size_connect_threads"]

logger = logging.getLogger("aioiothub.simulator")


def raise_open_file_limit(needed: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``needed``; the hard limit too where the process
    may (a privileged process, as in many containers).

    Returns:
        The soft limit now in force; a warning is logged when it is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and needed > hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            soft, hard = needed, needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        logger.warning(
            "this process may open %d files (RLIMIT_NOFILE), fewer than the %d a fleet this size needs; "
            "use --processes, or raise the limit (ulimit -n)", soft, needed,
        )
    return soft


def size_connect_threads(connect_concurrency: int) -> None:
    """Give the running event loop's default executor one thread per concurrent connect.

    The aiomqtt transport runs each TLS handshake in the loop's default executor (a blocking
    call inside paho-mqtt), whose default size (CPU count + 4) would otherwise cap how many devices
    connect at once, whatever ``connect_concurrency`` says. The threads idle once the fleet is up.
    Call it only in a process the simulator owns: it replaces the loop's default executor.
    """
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=connect_concurrency, thread_name_prefix="aioiothub-connect")
    )
