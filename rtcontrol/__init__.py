"""rtcontrol: a real-time fMRI control room.

Everything outside ``rtcontrol.gui`` (and ``rtcontrol.subject.display``) is Qt-free.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
