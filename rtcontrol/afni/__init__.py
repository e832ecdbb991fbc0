"""AFNI realtime sender: the console as an image source for AFNI's realtime plugin (``afni -rt``).

* :mod:`~rtcontrol.afni.protocol`: pure protocol (control string, metadata block, images, end of run);
* :mod:`~rtcontrol.afni.channel`: control string then TCP or shared-memory data channel (asyncio);
* :mod:`~rtcontrol.afni.shm`: IOCHAN's SysV shared-memory ring (ctypes), never left dangling;
* :mod:`~rtcontrol.afni.sender`: :class:`AfniSender`, a bounded queue and its own task, off the hot path;
* :mod:`~rtcontrol.afni.motion`: AFNI's reverse channel (motion / ROI means per TR);
* :mod:`~rtcontrol.afni.link`: :class:`AfniLink`, the console's switchable sender + motion receiver;
* :mod:`~rtcontrol.afni.source` / :mod:`~rtcontrol.afni.feed_cli`: ``main.py afni-feed``.

Spec: ``specs/afni-realtime.md``.
"""

#: The modules this package offers (each is imported on its own: importing the package loads none of them).
__all__ = ["protocol", "channel", "shm", "sender", "motion", "link", "source", "feed_cli"]
