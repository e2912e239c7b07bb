#!/usr/bin/env python3
"""Seed storage with a synthetic drone flight: the photos the kind end-to-end run reconstructs.

Runs inside the stage image (a Job in tests/e2e/kind.sh), with the same AWS_* environment as the stages:
`python seed_photos.py --photos s3://drone-photos/quarry/2026-11-20/ --create-bucket spaceport-results`.
Buckets of --photos and every --create-bucket are created when missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from spaceport.storage import S3Store, open_store, s3_client
from spaceport.synthetic import PRESETS, generate_flight


def ensure_bucket(bucket: str) -> None:
    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=bucket)


def seed(photos_uri: str, preset: str, buckets: list[str]) -> list[str]:
    """Render the flight into a temp dir, then upload it; returns the keys written."""
    store = open_store(photos_uri)
    if isinstance(store, S3Store):
        for bucket in [store.bucket, *buckets]:
            ensure_bucket(bucket)
    with tempfile.TemporaryDirectory() as tmp:
        generate_flight(tmp, preset=preset)
        return store.upload_dir(Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", required=True, help="s3://bucket/prefix (or a path) to fill with photos")
    parser.add_argument("--preset", default="test", choices=sorted(PRESETS), help="synthetic flight size")
    parser.add_argument("--create-bucket", action="append", default=[], help="another bucket to create")
    args = parser.parse_args(argv)
    keys = seed(args.photos, args.preset, args.create_bucket)
    photos = [k for k in keys if k.lower().endswith((".jpg", ".jpeg"))]
    print(f"seeded {len(photos)} photos ({len(keys)} files) into {args.photos}")
    return 0 if photos else 1


if __name__ == "__main__":
    sys.exit(main())
