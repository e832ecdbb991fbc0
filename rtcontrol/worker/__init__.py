"""The headless worker (``main.py --worker``) and the console's client for it.

* :mod:`~rtcontrol.worker.server`: sessions per console, reliable events, requests.
* :mod:`~rtcontrol.worker.runner` / :mod:`~rtcontrol.worker.runproc`: one process per run.
* :mod:`~rtcontrol.worker.projects`: finding and describing projects.
* :mod:`~rtcontrol.worker.cluster` / :mod:`~rtcontrol.worker.parallel`: the worker's Dask cluster and a run's
  ``ctx.share/map/submit`` on it.
* :mod:`~rtcontrol.worker.client`: :class:`WorkerClient`, used by the console.
* :mod:`~rtcontrol.worker.console_files`: the console's guarded answer to ``ctx.files``.
* :mod:`~rtcontrol.worker.embedded`: ``local_worker()`` on 127.0.0.1.
"""

#: The modules this package offers (each is imported on its own: importing the package loads none of them).
__all__ = ["server", "runner", "runproc", "projects", "cluster", "parallel", "client", "console_files", "embedded"]
