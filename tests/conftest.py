"""Shared fixtures. Services (moto S3, the Kubernetes emulator) are started by the tests that need them."""

from __future__ import annotations

import os

# numba caches compiled kernels next to the sources unless told otherwise; keep them out of the tree.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))
