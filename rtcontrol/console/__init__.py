"""The console: the hub of a run, Qt-free (the window in :mod:`rtcontrol.gui` is a view of it).

* :mod:`~rtcontrol.console.controller`: :class:`ConsoleController` owns one run at a time
  (watcher -> worker / AFNI / recorder, feedback -> subject agent) and publishes on ``events``.
* :mod:`~rtcontrol.console.session`: :class:`ConsoleSession` adds the links (embedded on loopback
  or remote) and the simulated scanner.
* :mod:`~rtcontrol.console.settings`: :class:`RunSettings`, one TOML file per run.
* :mod:`~rtcontrol.console.events`, :mod:`~rtcontrol.console.model`, :mod:`~rtcontrol.console.diagnostics`:
  what observers see; :mod:`~rtcontrol.console.headless`: ``main.py run --no-gui``.
"""

#: The modules this package offers (each is imported on its own: importing the package loads none of them).
__all__ = ["controller", "session", "settings", "events", "model", "diagnostics", "ports", "headless"]
