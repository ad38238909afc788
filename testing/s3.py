"""A real S3 protocol server on loopback and the real `litestream replicate`: the demo's, tests' and bench's replicas."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litestream import run_litestream
from drillbook.tasks.runner import CommandRecord


@contextlib.contextmanager
def local_s3(host: str = "127.0.0.1") -> Iterator[str]:
    """A real S3 protocol server (moto) on a free loopback port; yields its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise DrillbookError("the demo needs moto's server: pip install 'drillbook[demo]' (or: pip install 'moto[server]')") from None
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    try:
        address, port = server.get_host_and_port()
        yield f"http://{address}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def die_with_parent() -> None:
    """In a child before exec: SIGKILL when the test process dies, even by a signal that skips our `finally` (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def moto_process(host: str = "127.0.0.1", timeout: float = 60.0) -> Iterator[str]:
    """moto's S3 server in a process of its own (and its own process group): a busy replica's thousands of
    PUTs then get a core of their own instead of sharing the test process's interpreter lock. Yields the endpoint."""
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,  # a test run killed from outside takes its S3 server with it
    )
    endpoint = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise DrillbookError(f"moto's S3 server did not start on {endpoint} within {timeout:g}s") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        try:
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)


def s3_replica_url(endpoint: str, bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}?endpoint={endpoint}&region=us-east-1&forcePathStyle=true"


def replicate_once(db_path: str | Path, replica_url: str, *, timeout: float = 120) -> CommandRecord:
    """Push the database to its replica with the real `litestream replicate -once`."""
    record = run_litestream(["replicate", "-once", str(db_path), replica_url], timeout=timeout).record
    if not record.ok:
        raise DrillbookError(f"litestream replicate failed (exit {record.exit_code}): {record.stderr_tail()}")
    return record
