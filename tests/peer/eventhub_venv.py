"""A virtual environment of its own for ``azure-eventhub``, the back end's reader: ``.peer-venv-eventhub``.

``azure-eventhub`` carries its own pure-Python AMQP stack; it gets a venv of its own so that it is
tested exactly as a back end installs it. Built with the peer venv machinery of
``benchmarks/_peer_venv.py`` (which the Event Hubs benchmark shares) on first use, reused while the
SDK imports.
"""

from __future__ import annotations

from benchmarks._peer_venv import EVENTHUB_REQUIREMENTS, EVENTHUB_VENV, ensure_eventhub_python

__all__ = ["EVENTHUB_REQUIREMENTS", "EVENTHUB_VENV", "ensure_eventhub_python"]
