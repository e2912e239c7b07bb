"""Fixtures: the operator's (moto S3, buckets, emulated cluster) plus a kubelet stand-in that runs real stages."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.operator.conftest import buckets, cluster, moto_url, s3
from tests.operator.harness import Cluster
from tests.production.kubelet import Kubelet

__all__ = ["buckets", "cluster", "moto_url", "s3"]


@pytest.fixture
def volumes(tmp_path: Path) -> dict[str, Path]:
    """PersistentVolumeClaims by name, each a local folder."""
    claims = {name: tmp_path / "pv" / name for name in ("survey-photos", "survey-results")}
    for path in claims.values():
        path.mkdir(parents=True)
    return claims


@pytest.fixture
async def kubelet(cluster: Cluster, volumes: dict[str, Path]) -> AsyncIterator[Kubelet]:
    # The suite's numba cache, not the Pod's empty /scratch one: each Pod would otherwise compile the CPU kernels
    # afresh. An empty NUMBA_CACHE_DIR is numba's default, the one `make setup` filled.
    cache = {"NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "")}
    async with Kubelet(cluster.api, cluster.ns, volumes, env_overrides=cache) as k:
        yield k
