"""IoT Hub's service REST API (api-version 2021-04-12) on the emulator's HTTPS port, plus its own extras.

What Microsoft's service SDKs (``azure-iot-hub`` for Python, ``azure-iothub`` for Node.js) call:

===================  =========================================================================
module               routes
===================  =========================================================================
``identities``       ``/devices/{id}``, ``/devices``, ``/devices/{id}/modules[/{mid}]``
``twins``            ``/twins/{id}[/modules/{mid}]``: GET, PATCH, PUT
direct methods       ``POST /twins/{id}[/modules/{mid}]/methods`` (shared with IoT Edge callers,
                     :mod:`aioiothub.emulator.edge.edge_methods`)
``query``            ``POST /devices/query``
``stats``            ``/statistics/devices``, ``/statistics/service``
``emulator_routes``  ``/emulator/…``: C2D send and feedback, telemetry read and follow (what the
                     real service does over AMQP / Event Hubs; emulator-only)
===================  =========================================================================

Every call is authorized by a shared access policy (:mod:`.policies`); refusals use IoT Hub's error
body (:mod:`.errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aioiothub.emulator.hub import Hub
from aioiothub.emulator.rest.https import HttpRequest, Router
from aioiothub.emulator.service_api.context import ServiceContext
from aioiothub.emulator.service_api.emulator_routes import install_emulator_routes
from aioiothub.emulator.service_api.identities import install_identities
from aioiothub.emulator.service_api.policies import (
    SharedAccessPolicy,
    development_policies,
    generated_policies,
    policy_connection_string,
)
from aioiothub.emulator.service_api.query import install_query
from aioiothub.emulator.service_api.stats import install_statistics
from aioiothub.emulator.service_api.twins import install_twins

__all__ = [
    "SharedAccessPolicy",
    "development_policies",
    "generated_policies",
    "install_service_api",
    "policy_connection_string",
]


def install_service_api(
    router: Router,
    hub: Hub,
    policies: Sequence[SharedAccessPolicy],
    scopes: Callable[[], Sequence[str]],
) -> Callable[[HttpRequest], SharedAccessPolicy]:
    """Add the service routes to ``router``.

    Args:
        router: the HTTPS router of the emulator's port-443 listener.
        hub: the hub the routes drive.
        policies: the shared access policies callers authenticate with.
        scopes: the host names a token's ``sr`` may name.

    Returns:
        The check for service callers of the direct-method routes (``ServiceConnect``).
    """
    context = ServiceContext(hub, tuple(policies), scopes)
    install_identities(router, context)
    install_twins(router, context)
    install_query(router, context)
    install_statistics(router, context)
    install_emulator_routes(router, context)
    return lambda request: context.authorize(request, "ServiceConnect")
