#!/usr/bin/env python3
"""rtcontrol entry point: the console GUI by default, ``--worker``, ``--subject``, or a subcommand."""

import sys

from rtcontrol.cli import main

if __name__ == "__main__":
    import multiprocessing

    multiprocessing.freeze_support()  # the bundle: Dask's LocalCluster starts its processes from this executable
    sys.exit(main())
