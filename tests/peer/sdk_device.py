"""Entry script: drive an official ``azure.iot.device.aio.IoTHubDeviceClient`` (see ``sdk_driver``).

Run with the peer virtual environment's interpreter; pytest does not collect it.
"""

from __future__ import annotations

from sdk_driver import main

if __name__ == "__main__":
    main("IoTHubDeviceClient")
