"""Subscription filters as a whole: which ones an identity may hold, and the prefix each one matches."""

from __future__ import annotations

from aioiothub.protocol.topics.messages import c2d_subscription, input_subscription
from aioiothub.protocol.topics.methods import METHODS_SUBSCRIPTION
from aioiothub.protocol.topics.twin import TWIN_DESIRED_SUBSCRIPTION, TWIN_RESPONSE_SUBSCRIPTION

__all__ = ["allowed_subscriptions", "filter_prefix"]


def filter_prefix(topic_filter: str) -> str:
    """The literal start of a ``…/#`` filter: every topic the filter matches begins with it.

    Dispatch by prefix is cheaper than parsing each topic to learn its kind.

    Example:
        >>> filter_prefix(METHODS_SUBSCRIPTION)
        '$iothub/methods/POST/'
    """
    if not topic_filter.endswith("/#"):
        raise ValueError(f"topic_filter must end with '/#', not {topic_filter!r}")
    return topic_filter[:-1]


def allowed_subscriptions(device_id: str, module_id: str | None) -> frozenset[str]:
    """List the exact subscription filters IoT Hub accepts from an identity.

    Devices may subscribe to cloud-to-device messages, modules to their inputs; both to twin
    responses, desired-property notifications and direct methods. (A DPS connection may subscribe
    only to :data:`DPS_RESPONSE_SUBSCRIPTION`.)

    Args:
        device_id: the device id.
        module_id: the module id, or ``None`` for a device.

    Returns:
        The allowed filters.

    Raises:
        TypeError, ValueError: an id is invalid.
    """
    messages = c2d_subscription(device_id) if module_id is None else input_subscription(device_id, module_id)
    return frozenset({messages, TWIN_RESPONSE_SUBSCRIPTION, TWIN_DESIRED_SUBSCRIPTION, METHODS_SUBSCRIPTION})
