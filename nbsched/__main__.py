from __future__ import annotations

from nbsched.cli import main

if __name__ == "__main__":  # not again in processes that re-import __main__ (Dask's LocalCluster workers)
    main()
