"""When is a connection dead? The client's own rule, shared by every transport.

Theory of operation
-------------------
A TCP connection can die without a FIN or RST (a NAT that forgot it, a cable pulled, a hub that
stopped answering): the socket stays open and writes still succeed for a while. MQTT's keep-alive
notices eventually, but paho, for one, declares the link dead only when a PINGRESP is a whole
keep-alive late -- up to twice the keep-alive -- while telemetry waits and times out.

:class:`LivenessMonitor` is asked, now and then, with the time, when a packet last arrived and
since when the oldest unacknowledged publish has been waiting. It answers with a :class:`Verdict`:

``ALIVE``
    Nothing to do.
``PROBE``
    A PUBACK is ``ack_timeout`` overdue and nothing at all has arrived for as long. Send a
    PINGREQ: a hub that is merely slow answers it, which clears the suspicion.
``DEAD``
    Nothing has arrived for 1.5 x the keep-alive (the same allowance the hub gives the client), or
    a probe went unanswered for ``ack_timeout``. Drop the connection and reconnect; what was in
    flight is sent again on the next connection.

States: *trusting* (no probe outstanding) and *probing* (a PINGREQ was sent at ``probe_sent``);
any packet received after the probe returns it to *trusting*. :meth:`LivenessMonitor.next_check`
says when a verdict could next change, so the caller wakes exactly then rather than polling.
Times are whatever clock the caller uses for ``now`` and ``last_received``; nothing here reads a
clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["LivenessMonitor", "Verdict"]


class Verdict(enum.Enum):
    """What the caller should do about the connection."""

    ALIVE = "alive"
    PROBE = "probe"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Check:
    """One answer of :meth:`LivenessMonitor.check`, with the reason for ``DEAD``."""

    verdict: Verdict
    reason: str = ""


_ALIVE = Check(Verdict.ALIVE)
_PROBE = Check(Verdict.PROBE)


class LivenessMonitor:
    """Decides whether one connection is still alive.

    Args:
        keepalive: the MQTT keep-alive in seconds.
        ack_timeout: how long a PUBACK may be overdue before the link is probed, and how long the
            probe may go unanswered.

    Example:
        >>> monitor = LivenessMonitor(keepalive=60, ack_timeout=10)
        >>> monitor.check(now=100.0, last_received=95.0, oldest_unacked_since=None).verdict
        <Verdict.ALIVE: 'alive'>
        >>> monitor.check(now=100.0, last_received=88.0, oldest_unacked_since=85.0).verdict
        <Verdict.PROBE: 'probe'>
        >>> monitor.check(now=111.0, last_received=88.0, oldest_unacked_since=85.0).reason
        'no answer to a PINGREQ for 11.0 s while a PUBACK was overdue'
    """

    __slots__ = ("_ack_timeout", "_probe_sent", "_silence_limit")

    def __init__(self, *, keepalive: float, ack_timeout: float) -> None:
        self._silence_limit = 1.5 * keepalive
        self._ack_timeout = ack_timeout
        self._probe_sent: float | None = None

    def next_check(self, *, now: float, last_received: float, oldest_unacked_since: float | None) -> float:
        """When to check next: the first moment the verdict could change, given what is known now.

        A publish sent after ``now`` can become overdue only ``ack_timeout`` later, so the answer
        is never further away than that.
        """
        ack_timeout = self._ack_timeout
        moments = [last_received + self._silence_limit, now + ack_timeout]
        if self._probe_sent is not None:
            moments.append(self._probe_sent + ack_timeout)
        elif oldest_unacked_since is not None:
            moments.append(max(oldest_unacked_since, last_received) + ack_timeout)
        return max(now, min(moments))

    def check(self, *, now: float, last_received: float, oldest_unacked_since: float | None) -> Check:
        """Judge the connection.

        Args:
            now: the current time.
            last_received: when the last packet arrived from the peer.
            oldest_unacked_since: when the oldest publish still waiting for its PUBACK was sent,
                or ``None`` when nothing waits.
        """
        silence = now - last_received
        if silence >= self._silence_limit:
            return Check(Verdict.DEAD, f"nothing received for {silence:.1f} s (1.5 x keep-alive)")
        probe_sent = self._probe_sent
        if probe_sent is not None:
            if last_received >= probe_sent:
                self._probe_sent = probe_sent = None
            elif now - probe_sent >= self._ack_timeout:
                return Check(
                    Verdict.DEAD, f"no answer to a PINGREQ for {now - probe_sent:.1f} s while a PUBACK was overdue"
                )
            else:
                return _ALIVE
        # An overdue PUBACK is suspicious only when the hub has also been silent that long: a hub
        # still answering other packets is slow, not gone.
        ack_timeout = self._ack_timeout
        if oldest_unacked_since is not None and now - oldest_unacked_since >= ack_timeout and silence >= ack_timeout:
            self._probe_sent = now
            return _PROBE
        return _ALIVE
