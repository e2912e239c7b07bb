"""Shared fixtures. Services (moto S3, the Kubernetes emulator) are started by the tests that need them."""

from __future__ import annotations

# numba's kernel cache is left where `make setup` fills it (next to the sources, in git-ignored __pycache__
# folders), so the suite loads the kernels setup compiled instead of compiling them all again.
import signal
from collections.abc import Iterator

import pytest

# A suite started in the background of a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, and so
# would every `spaceport` it starts: the tests of Ctrl-C would then see it ignored. Test what a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 shared by the session's tests."""
    from tests.s3 import moto_s3  # imported here: the GPU check runs the train tests where moto is absent

    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint: str) -> Iterator[str]:
    """The standard AWS environment pointed at the test S3 server (yields the endpoint)."""
    from tests.s3 import s3_environment

    with s3_environment(s3_endpoint):
        yield s3_endpoint


@pytest.fixture
def s3_bucket(s3_env: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket; yields its name."""
    from spaceport.storage import s3_client

    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40].strip("-")
    s3_client().create_bucket(Bucket=name)
    return name
