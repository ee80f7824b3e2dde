"""Fault injection: refuse connects, fail, ignore or drop twin requests, delay PUBACKs.

Theory of operation
-------------------
Each fault is a counter armed by a test and spent one event at a time: the next ``count`` CONNECTs,
or the next ``count`` twin requests, get the fault; arming again replaces the counter, 0 disarms it.
Twin faults are tried in a fixed order -- drop the connection, then ignore, then fail with a status --
and a request spends at most one of them. The PUBACK delay is not a counter but a setting that holds
until it is changed. Nothing here touches a connection: the parts of the hub that serve CONNECTs and
twin requests ask :class:`Faults` what to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Protocol, Self, overload

from aioiothub.emulator.hub.values import check_count
from aioiothub.protocol.connect import CONNACK_SERVER_UNAVAILABLE

__all__ = ["ArmsFault", "Faults", "TwinFault"]

_P = ParamSpec("_P")


@dataclass(frozen=True, slots=True)
class TwinFault:
    """What to do with one twin request instead of serving it.

    Attributes:
        action: ``"drop"`` the connection, ``"ignore"`` the request, or ``"fail"`` it with :attr:`status`.
        status: the error status for ``"fail"``.
    """

    action: Literal["drop", "ignore", "fail"]
    status: int = 0


def _check_between(value: int, argument: str, what: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{argument} must be {what} {low}..{high}, got {value!r}")


_DROP = TwinFault("drop")
_IGNORE = TwinFault("ignore")


class Faults:
    """The faults armed on one hub: ``hub.faults`` (the hub's own fault calls forward here)."""

    __slots__ = (
        "_dropping_twin_requests",
        "_failed_twin_operations",
        "_ignored_subscribes",
        "_ignored_twin_requests",
        "_puback_delay",
        "_refuse_return_code",
        "_refused_connects",
        "_twin_failure_status",
    )

    def __init__(self) -> None:
        self._refused_connects = 0
        self._refuse_return_code = CONNACK_SERVER_UNAVAILABLE
        self._failed_twin_operations = 0
        self._twin_failure_status = 429
        self._ignored_twin_requests = 0
        self._dropping_twin_requests = 0
        self._puback_delay = 0.0
        self._ignored_subscribes = 0

    # --- CONNECT -----------------------------------------------------------------------------------

    def refuse_connects(self, count: int, return_code: int = CONNACK_SERVER_UNAVAILABLE) -> None:
        """Answer the next ``count`` CONNECTs with CONNACK ``return_code`` (0 cancels).

        Example:
            >>> hub.faults.refuse_connects(2)  # doctest: +SKIP
        """
        check_count(count, "count")
        _check_between(return_code, "return_code", "a refusing CONNACK code", 1, 5)
        self._refused_connects = count
        self._refuse_return_code = return_code

    def take_connect_refusal(self) -> int | None:
        """Spend one refusal: the CONNACK return code to answer with, or ``None`` to decide normally."""
        if not self._refused_connects:
            return None
        self._refused_connects -= 1
        return self._refuse_return_code

    # --- twin requests -----------------------------------------------------------------------------

    def fail_twin_operations(self, count: int, status: int = 429) -> None:
        """Answer the next ``count`` twin GET / reported PATCH requests with ``status`` (0 cancels).

        The twin is left unchanged by a failed request.
        """
        check_count(count, "count")
        _check_between(status, "status", "an error status", 300, 599)
        self._failed_twin_operations = count
        self._twin_failure_status = status

    def ignore_twin_requests(self, count: int) -> None:
        """Leave the next ``count`` twin GET / reported PATCH requests unanswered (0 cancels).

        The requests are acknowledged (PUBACK) but have no effect, as if the hub lost them.
        """
        check_count(count, "count")
        self._ignored_twin_requests = count

    def drop_on_twin_requests(self, count: int) -> None:
        """Close the connection instead of answering each of the next ``count`` twin requests (0 cancels).

        The request has no effect and is not acknowledged; the device sees its connection drop with
        the request in flight.
        """
        check_count(count, "count")
        self._dropping_twin_requests = count

    def take_twin_fault(self) -> TwinFault | None:
        """Spend the fault for one twin request, or ``None`` to serve it normally."""
        if self._dropping_twin_requests:
            self._dropping_twin_requests -= 1
            return _DROP
        if self._ignored_twin_requests:
            self._ignored_twin_requests -= 1
            return _IGNORE
        if self._failed_twin_operations:
            self._failed_twin_operations -= 1
            return TwinFault("fail", self._twin_failure_status)
        return None

    # --- subscriptions -----------------------------------------------------------------------------

    def ignore_subscribes(self, count: int) -> None:
        """Leave the next ``count`` SUBSCRIBE packets without a SUBACK and without effect (0 cancels).

        Example:
            >>> hub.faults.ignore_subscribes(1)  # doctest: +SKIP
        """
        check_count(count, "count")
        self._ignored_subscribes = count

    def take_ignored_subscribe(self) -> bool:
        """Spend the fault for one SUBSCRIBE: ``True`` when it is to be ignored."""
        if not self._ignored_subscribes:
            return False
        self._ignored_subscribes -= 1
        return True

    # --- PUBACKs -----------------------------------------------------------------------------------

    def delay_pubacks(self, seconds: float) -> None:
        """Hold back every PUBACK by ``seconds`` (the hub's traffic shaping); 0 stops."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < math.inf:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._puback_delay = float(seconds)

    @property
    def puback_delay(self) -> float:
        """The current PUBACK delay in seconds."""
        return self._puback_delay


class _HasFaults(Protocol):
    faults: Faults


class ArmsFault(Generic[_P]):
    """A hub method that arms the fault of the same name: ``hub.delay_pubacks(0.5)`` is
    ``hub.faults.delay_pubacks(0.5)``, documented on :class:`Faults`."""

    def __init__(self, arm: Callable[Concatenate[Faults, _P], None]) -> None:
        self._arm = arm
        self.__doc__ = arm.__doc__

    @overload
    def __get__(self, hub: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, hub: _HasFaults, owner: type[Any]) -> Callable[_P, None]: ...

    def __get__(self, hub: _HasFaults | None, owner: type[Any]) -> Self | Callable[_P, None]:
        if hub is None:
            return self
        arm, faults = self._arm, hub.faults

        def armed(*args: _P.args, **kwargs: _P.kwargs) -> None:
            arm(faults, *args, **kwargs)

        return armed
