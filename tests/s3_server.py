"""A moto S3 server on a free loopback port (never a remote service), for the object-storage tests."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def moto_s3(folder: Path) -> Iterator[dict[str, str]]:
    """Start moto's S3 server on 127.0.0.1; yields the AWS variables that point at it (also set
    in this process while it runs, restored afterwards). ``folder`` holds blank AWS config files,
    so no profile of this machine is read."""
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets per process, not per server: start from none
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"),
                           timeout=30).close()
    blank = folder / "aws-none"
    blank.write_text("")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-never-printed",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "AWS_CONFIG_FILE": str(blank), "AWS_SHARED_CREDENTIALS_FILE": str(blank)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    S3FileSystem.clear_instance_cache()  # fsspec reuses filesystems: none may point at an older server
    try:
        yield env
    finally:
        server.stop()
        S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def archive_bucket(examples: Path, species: list[str]) -> Any:
    """An s3fs filesystem on the running server with bucket ``photos`` holding the example
    photos (and labels) of ``species`` under ``archive/``, and an empty bucket ``results``."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("photos")
    fs.mkdir("results")
    for sp in species:
        for p in (examples / sp).rglob("*"):
            if p.is_file():
                fs.put_file(str(p), f"photos/archive/{p.relative_to(examples).as_posix()}")
    return fs


@contextmanager
def moto_s3_with_auth(folder: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server in a process of its own on 127.0.0.1 that checks credentials (its IAM
    knows no key): every request is denied. Yields AWS variables with a key it refuses."""
    import subprocess
    import sys

    from gloper_jobs.testbed.services import free_port, wait_port

    port = free_port()
    blank = folder / "aws-none"
    blank.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield {"AWS_ACCESS_KEY_ID": "AKIAREVOKEDKEY", "AWS_SECRET_ACCESS_KEY": "revoked-secret-never-printed",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
               "AWS_CONFIG_FILE": str(blank), "AWS_SHARED_CREDENTIALS_FILE": str(blank)}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
