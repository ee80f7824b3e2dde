"""IoT Hub's error answers for the service REST API: ``{"Message": "ErrorCode:{name};{text}", …}``.

Both official service SDKs read the error name between ``ErrorCode:`` and ``;`` (the Node.js SDK
turns ``DeviceNotFound`` into ``DeviceNotFoundError``, 409 into ``DeviceAlreadyExistsError``, 412
into ``InvalidEtagError``), so refusals carry IoT Hub's names, not numbers.
"""

from __future__ import annotations

import datetime
import uuid

from aioiothub.emulator.rest.https import HttpError, HttpResponse

__all__ = ["service_error"]


def service_error(status: int, name: str, message: str) -> HttpError:
    """An :class:`HttpError` answered with IoT Hub's error body.

    Example:
        >>> service_error(404, "DeviceNotFound", "Device dev9 not registered").status
        404
    """
    stamp = datetime.datetime.now(datetime.UTC).strftime("%m/%d/%Y %H:%M:%S")
    body = {
        "Message": f"ErrorCode:{name};{message}",
        "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}-G:0-TimeStamp:{stamp}",
    }
    return HttpError(status, f"{name}: {message}", response=HttpResponse.json(status, body))
