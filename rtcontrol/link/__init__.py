"""The secure link shared by console <-> worker and console <-> subject agent.

* :mod:`~rtcontrol.link.codec`: the wire format (pure): JSON control frames, one binary frame per volume.
* :mod:`~rtcontrol.link.certs`, :mod:`~rtcontrol.link.pinning`: self-signed certificates, SHA-256 pins.
* :mod:`~rtcontrol.link.tokens`: tokens stored hashed, constant-time checks, throttling.
* :mod:`~rtcontrol.link.transport`: websockets over TLS: ``serve`` and ``connect``.
* :mod:`~rtcontrol.link.clock`: NTP-style clock offset from pings.
"""

#: The modules this package offers (each is imported on its own: importing the package loads none of them).
__all__ = ["codec", "certs", "pinning", "tokens", "transport", "clock"]
