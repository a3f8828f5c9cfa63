"""The services verify Redis's TLS certificate against the CA the infrastructure hands them.

Memorystore's in-transit encryption uses a server CA of the instance's own, which clients must
trust explicitly ("Download the CA certificate ... and use it to connect", Google Cloud docs:
https://cloud.google.com/memorystore/docs/redis/about-in-transit-encryption). The GCP program
mounts it and names it in REDIS_CA_FILE; ElastiCache presents a certificate of a public CA, so
AWS leaves the variable empty and the system store applies.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.billing.cache import blocking_client
from services.billing.config import CacheSettings, Settings
from services.devservers import find_binary, free_port

LOOPBACK = "127.0.0.1"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """redis-server speaking TLS only, with a certificate signed by a CA of its own."""
    base = tmp_path_factory.mktemp("redis-tls")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=instance-ca",
        cwd=base,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        f"/CN={LOOPBACK}",
        cwd=base,
    )
    (base / "san.ext").write_text(f"subjectAltName=IP:{LOOPBACK}\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        cwd=base,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            find_binary("redis-server"),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            LOOPBACK,
            "--tls-cert-file",
            str(base / "server.pem"),
            "--tls-key-file",
            str(base / "server.key"),
            "--tls-ca-cert-file",
            str(base / "ca.pem"),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        trusted = CacheSettings(
            LOOPBACK, port, tls=True, auth_token="", ca_file=str(base / "ca.pem")
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                blocking_client(trusted).ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port, base / "ca.pem"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_client_trusts_the_instance_ca_it_is_given(tls_redis: tuple[int, Path]) -> None:
    port, ca_file = tls_redis
    cache = CacheSettings(LOOPBACK, port, tls=True, auth_token="", ca_file=str(ca_file))
    client = blocking_client(cache)
    assert client.set("verified", "yes")
    assert client.get("verified") == b"yes"


def test_client_without_the_ca_refuses_the_instance(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    cache = CacheSettings(LOOPBACK, port, tls=True, auth_token="", ca_file=None)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        blocking_client(cache).ping()


def test_settings_read_the_ca_file_and_treat_empty_as_the_system_store() -> None:
    base = {
        "BILLING_ENVIRONMENT": "dev",
        "DATABASE_HOST": "db",
        "DATABASE_PORT": "5432",
        "DATABASE_NAME": "billing",
        "DATABASE_USER": "billing",
        "DATABASE_PASSWORD": "x",
        "REDIS_HOST": "cache",
        "REDIS_PORT": "6379",
        "REDIS_TLS": "true",
        "PAYMENT_GATEWAY": "simulator",
    }
    mounted = Settings.from_env({**base, "REDIS_CA_FILE": "/etc/billing/redis-ca/ca.pem"})
    assert mounted.cache.ca_file == "/etc/billing/redis-ca/ca.pem"
    assert Settings.from_env({**base, "REDIS_CA_FILE": ""}).cache.ca_file is None
