"""Every environment variable Mycelium reads, in one place."""

from __future__ import annotations

import os
from pathlib import Path

#: Where converted teacher weights are cached (default ~/.cache/mycelium).
CACHE_DIR = "MYCELIUM_CACHE_DIR"
#: Default store URL when --store is not given (default "runs").
STORE_URL = "MYCELIUM_STORE"
#: Endpoint override for S3 (tests, MinIO, LocalStack).
S3_ENDPOINT = "MYCELIUM_S3_ENDPOINT"
#: The capture worker's job: "prepare" (once per run) or "shard" (set by the state machine's container overrides).
CAPTURE_MODE = "MYCELIUM_CAPTURE_MODE"
#: The training job's improvement round (the state machine sets it): the loop's options, round k's data and models.
TRAIN_ROUND = "MYCELIUM_ROUND"
#: What the training job trains: unset, the round's students; "verifier", the round's verifier from its beams.
TRAIN_WHAT = "MYCELIUM_TRAIN"
#: Set by AWS Batch in each element of an array job.
BATCH_ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "mycelium")
    return Path(root)


def default_store_url() -> str:
    return os.environ.get(STORE_URL, "runs")


def s3_endpoint() -> str | None:
    return os.environ.get(S3_ENDPOINT) or None
