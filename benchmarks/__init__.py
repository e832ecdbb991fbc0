"""Benchmarks: one module per area, each with ``bench() -> Iterable[Figure]``; see ``runner``."""
