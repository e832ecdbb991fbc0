"""``ctx.share`` / ``ctx.map`` / ``ctx.submit`` in a run process, on Dask distributed.

The run process connects a ``Client`` to the worker's cluster (:mod:`rtcontrol.worker.cluster`) the
first time the project asks for parallel work; the address comes from the worker over the run's pipe,
so the run never starts a cluster of its own. What this adds to Dask:

* shared arrays (a mask, a model, the current volume) are scattered once to every Dask worker
  (``ctx.share``) and passed to tasks as futures, never pickled into each task; the cluster keeps a
  value as long as the project keeps its handle (a handle in a local variable: until process() returns);
* a Dask worker lost mid-volume: Dask itself re-runs its tasks elsewhere; if the lost worker held the
  only copy of shared data, it is scattered again from the run's own copy and the work re-sent, so
  the volume is not lost (``retries`` times at most, then the error ends the run as any other);
* work belongs to its volume: tasks from ``ctx.submit`` still unfinished when ``process()`` returns are
  cancelled and logged, so nothing piles up behind the run; a slow volume is late, and reported so.

The project's own code (``project.py`` and the modules next to it) travels to the Dask workers by
value; what it imports from installed packages (numpy, rtcontrol...) must be installed there.
"""

from __future__ import annotations

import functools
import logging
import sys
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rtcontrol.worker.cluster import SchedulerUnreachable

log = logging.getLogger(__name__)


class Shared:
    """A value sent once to the cluster; pass it as an argument of ``ctx.map``/``ctx.submit``."""

    def __init__(self, value: Any, future: Any) -> None:
        self.value, self.future = value, future

    def __repr__(self) -> str:
        return f"<Shared {type(self.value).__name__} {getattr(self.future, 'key', '')}>"


class Task:
    """What ``ctx.submit`` returns: ``result()`` waits for it (re-sending it if shared data was lost)."""

    def __init__(self, parallel: DaskParallel, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self._parallel, self._call = parallel, (fn, args, kwargs)
        self.future = parallel._submit(fn, args, kwargs)

    def done(self) -> bool:
        return bool(self.future.done())

    def cancel(self) -> None:
        self.future.cancel()

    def result(self, timeout: float | None = None) -> Any:
        def wait() -> Any:
            return self.future.result(timeout=timeout)

        def resend() -> None:
            self.future = self._parallel._submit(*self._call)

        return self._parallel._with_retries(wait, resend)


class DaskParallel:
    """The run's connection to the Dask cluster; made lazily on the first share/map/submit."""

    def __init__(
        self,
        scheduler: Callable[[], str],
        *,
        project_dir: Path | None = None,
        logger: logging.Logger | None = None,
        retries: int = 2,
        connect_timeout: float = 10.0,
    ) -> None:
        self._scheduler = scheduler
        self.project_dir = Path(project_dir).resolve() if project_dir else None
        self.log = logger or log
        self.retries, self.connect_timeout = retries, connect_timeout
        self.client: Any = None
        self.address: str | None = None
        self._shared: weakref.WeakSet[Shared] = weakref.WeakSet()  # a handle dropped: Dask frees its data
        self._tasks: list[Task] = []
        self._seen_modules: set[str] = set()
        self._by_value: set[str] = set()  # the project's own modules

    # ----------------------------------------------------------------- the API behind ctx

    @property
    def parallelism(self) -> int:
        """Threads in the cluster right now (at least 1): a good number of chunks to split work into."""
        return max(1, sum(self._connect().nthreads().values()))

    def share(self, value: Any) -> Shared:
        handle = Shared(value, self._scatter(value))
        self._shared.add(handle)
        return handle

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """``[fn(item, *args, **kwargs) for item in items]`` on the cluster, in order; waits for all."""
        items = list(items)
        if not items:
            return []
        futures: list[Any] = []

        def send() -> None:
            futures[:] = self._map(fn, items, args, kwargs)

        def wait() -> list[Any]:
            return self.client.gather(futures)

        send()
        try:
            return self._with_retries(wait, send)
        finally:
            for f in futures:
                f.release()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
        task = Task(self, fn, args, kwargs)
        self._tasks.append(task)
        return task

    def end_volume(self) -> int:
        """After ``process()``: cancel the volume's submitted tasks still running; how many were."""
        tasks, self._tasks = self._tasks, []
        left = [t for t in tasks if not t.done()]
        for t in left:
            t.cancel()
        return len(left)

    def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                client.close(timeout=5)
            except Exception as exc:  # the run is over either way
                log.debug("closing the Dask client: %s", exc)

    # ----------------------------------------------------------------- internals

    def _connect(self) -> Any:
        if self.client is None:
            address = self._scheduler()  # the worker starts its LocalCluster on the first ask
            from distributed import Client

            try:
                self.client = Client(address, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise SchedulerUnreachable(f"the Dask scheduler {address} cannot be reached: {exc}") from None
            self.address = address
            self.log.info(f"parallel work on the Dask scheduler {address} "
                          f"({sum(self.client.nthreads().values())} thread(s))")
        return self.client

    def _scatter(self, value: Any) -> Any:
        return self._connect().scatter(value, broadcast=True, hash=False)

    def _resolve(self, value: Any) -> Any:
        return value.future if isinstance(value, Shared) else value

    def _submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        client = self._connect()
        fn = self._portable(fn)
        return client.submit(fn, *map(self._resolve, args), pure=False,
                             **{k: self._resolve(v) for k, v in kwargs.items()})

    def _map(self, fn: Callable[..., Any], items: list[Any], args: tuple, kwargs: dict) -> list[Any]:
        client = self._connect()
        fn = self._portable(fn)
        # extra positional iterables of Client.map: the same (resolved) argument for every item
        columns = [[self._resolve(a)] * len(items) for a in args]
        return client.map(fn, items, *columns, pure=False, **{k: self._resolve(v) for k, v in kwargs.items()})

    def _with_retries(self, wait: Callable[[], Any], resend: Callable[[], None]) -> Any:
        from distributed.client import FutureCancelledError

        for attempt in range(self.retries + 1):
            try:
                return wait()
            except FutureCancelledError:
                lost = self._rescatter_lost()
                if not lost or attempt == self.retries:
                    raise
                self.log.warning(f"a Dask worker was lost with {lost} shared value(s): sent again, work re-sent "
                                 f"(attempt {attempt + 2} of {self.retries + 1})")
                resend()
        raise AssertionError("unreachable")

    def _rescatter_lost(self) -> int:
        lost = [h for h in self._shared if h.future.status in ("cancelled", "lost", "error")]
        for h in lost:
            h.future = self._scatter(h.value)
        return len(lost)

    def _portable(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A function of the project's own code, pickled by value: Dask workers cannot import it by name."""
        import cloudpickle

        if self.project_dir is not None:
            for name, module in list(sys.modules.items()):
                if name in self._seen_modules:
                    continue
                self._seen_modules.add(name)
                file = getattr(module, "__file__", None)
                if file and Path(file).resolve().is_relative_to(self.project_dir):
                    cloudpickle.register_pickle_by_value(module)  # values of its classes too
                    self._by_value.add(name)
        if getattr(fn, "__module__", None) not in self._by_value:
            return fn
        # Dask pickles a task with plain pickle first (functions by name): ship the function's bytes instead
        return functools.partial(_call_by_value, cloudpickle.dumps(fn))


@functools.lru_cache(maxsize=64)
def _load_function(pickled: bytes) -> Callable[..., Any]:
    import cloudpickle

    return cloudpickle.loads(pickled)


def _call_by_value(pickled: bytes, *args: Any, **kwargs: Any) -> Any:
    """Runs on a Dask worker: the project's function, unpickled once per worker process."""
    return _load_function(pickled)(*args, **kwargs)
