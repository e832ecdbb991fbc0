"""The secure link shared by console <-> worker and console <-> subject agent.

* :mod:`~rtcontrol.link.codec`: the wire format (pure): JSON control frames, one binary frame per volume.
* :mod:`~rtcontrol.link.certs`, :mod:`~rtcontrol.link.pinning`: self-signed certificates, SHA-256 pins.
* :mod:`~rtcontrol.link.tokens`: tokens stored hashed, constant-time checks, throttling.
* :mod:`~rtcontrol.link.transport`: websockets over TLS: ``serve`` and ``connect``.
* :mod:`~rtcontrol.link.clock`: NTP-style clock offset from pings.
* :mod:`~rtcontrol.link.delivery`: the console links' delivery core (pure, sans-I/O): the outbox (ordered
  resend of what was not acknowledged, requests until answered, session lost), what a failed dial means
  (:class:`~rtcontrol.link.delivery.Redial`) and :class:`~rtcontrol.link.delivery.LinkState`.
* :mod:`~rtcontrol.link.reconnect`: the one (thin, asyncio) reconnect loop of both console links.
* :mod:`~rtcontrol.link.events`: what a console link tells its owner, through one ``on_event`` callback.
"""

#: The modules this package offers (each is imported on its own: importing the package loads none of them).
__all__ = ["codec", "certs", "pinning", "tokens", "transport", "clock"]
