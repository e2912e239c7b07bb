"""Fixtures: one moto S3 server per session; a fresh emulator and operator per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest

from tests.operator.harness import Cluster, running_cluster
from tests.s3 import S3_ENV, moto_s3

SECRET_VALUE = "s3cr3t-never-leaves-the-client"
"""moto accepts any key: a distinctive one lets tests prove it never shows up in status, Events or logs."""


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def s3(moto_url: str) -> Any:
    client = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    return client


@pytest.fixture
def buckets(s3: Any) -> tuple[str, str]:
    """Fresh input and output buckets, so tests never see each other's objects."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"photos-{suffix}", f"results-{suffix}")
    for name in names:
        s3.create_bucket(Bucket=name)
    return names


@pytest.fixture
async def cluster(s3: Any, moto_url: str) -> AsyncIterator[Cluster]:
    async with running_cluster(s3, moto_url) as c:
        await c.create_secret("s3-creds", {**S3_ENV, "AWS_ENDPOINT_URL": moto_url,
                                           "AWS_SECRET_ACCESS_KEY": SECRET_VALUE})
        yield c
