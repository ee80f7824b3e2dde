"""Entry script: drive an official ``azure.iot.device.aio.IoTHubModuleClient`` (see ``sdk_driver``).

Run with the peer virtual environment's interpreter; pytest does not collect it. A ``send_message``
command with ``output_name`` uses ``send_message_to_output``; the ``message`` handler receives
input messages.
"""

from __future__ import annotations

from sdk_driver import main

if __name__ == "__main__":
    main("IoTHubModuleClient")
