"""One identity's session with the hub: connect, reconnect and renew (the supervisor), and the operations on it.

Drives the sans-IO :mod:`aioiothub.protocol` over the :mod:`aioiothub.transports` seam; imports neither the
clients nor HTTPS.
"""
