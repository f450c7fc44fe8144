"""Start a real moto S3 server on a free loopback port, for tests and benchmarks.

moto runs as a child process rather than a thread: its request handling is pure Python, and
in the same process it would compete with the client under test for the GIL, skewing both
fault timing in tests and throughput in benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

# moto accepts any credentials; these keep botocore from searching for real ones.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def free_port() -> int:
    """A TCP port that was free a moment ago (the usual small race is acceptable in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto_server(startup_timeout: float = 30.0) -> tuple[str, Callable[[], None]]:
    """Start ``python -m moto.server`` on a free port; return (endpoint URL, stop function)."""
    port = free_port()
    env = {**os.environ, **DUMMY_AWS_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("MOTO_DEBUG") else subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with code {proc.returncode} during startup")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as reply:
                if reply.status == 200:
                    return url, stop
        time.sleep(0.1)
    stop()
    raise RuntimeError(f"moto server did not answer on {url} within {startup_timeout} s")


async def create_bucket(endpoint: str, bucket: str, region: str = "us-east-1") -> None:
    """Create `bucket` on the S3 server at `endpoint` (credentials from the environment)."""
    from aiobotocore.session import get_session

    session = get_session()
    async with session.create_client("s3", region_name=region, endpoint_url=endpoint) as s3:
        await s3.create_bucket(Bucket=bucket)
