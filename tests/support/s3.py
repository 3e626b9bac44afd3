"""A local S3-compatible server (moto's standalone server, from PyPI) for the object-store
path of the checkpoint store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

from benchmarks.ports import free_port
from workers.checkpoints import CheckpointStore

BUCKET = "adamp-tune-test"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach the server: botocore reads ``AWS_ENDPOINT_URL``."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def store(self, prefix: str) -> CheckpointStore:
        return CheckpointStore(f"s3://{BUCKET}/{prefix}")


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start moto's server on a free port with one bucket; this process's environment
    points botocore at it while the context lasts."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - a test-only dependency

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(f"http://127.0.0.1:{port}")
    try:
        with mock.patch.dict(os.environ, s3.env):
            import s3fs  # noqa: PLC0415

            s3fs.S3FileSystem.clear_instance_cache()
            s3fs.S3FileSystem().mkdir(BUCKET)
            yield s3
            s3fs.S3FileSystem.clear_instance_cache()
    finally:
        server.stop()
