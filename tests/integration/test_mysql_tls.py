"""The `mysql` source over TLS against a private MariaDB started with a self-signed CA and server
certificate (made here with `cryptography`) and a replication user that must use TLS (`REQUIRE SSL`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.devstack import MariaDB
from dbus_ray.errors import DbusError
from dbus_ray.mysql.source import MysqlOptions, MysqlSource

pytestmark = pytest.mark.integration

DB = "dbus_test"


def _write_ca_and_server_cert(directory: Path, cn: str = "dbus test CA") -> tuple[Path, Path, Path]:
    """(ca.pem, server-cert.pem, server-key.pem): a self-signed CA and a server certificate it signed, valid
    for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server-cert.pem", directory / "server-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MariaDB, Path]]:
    """A private MariaDB with TLS on; its replication user `dbus` must connect with TLS (REQUIRE SSL)."""
    certs = tmp_path_factory.mktemp("tls")
    ca, cert, key = _write_ca_and_server_cert(certs)
    server = MariaDB(extra_args=[f"--ssl-ca={ca}", f"--ssl-cert={cert}", f"--ssl-key={key}"]).start()
    try:
        conn = server.root_connect(DB)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL VARIABLES LIKE 'have_ssl'")
                assert cur.fetchone()[1] == "YES", "the server did not enable TLS"
                cur.execute("SET SESSION sql_log_bin = 0")
                for host in ("127.0.0.1", "localhost"):
                    cur.execute("ALTER USER %s@%s REQUIRE SSL", (server.user, host))
        finally:
            conn.close()
        yield server, ca
    finally:
        server.stop()


def _source(server: MariaDB, **options: Any) -> MysqlSource:
    options.setdefault("server_id", 7301)
    return MysqlSource("mysql-tls", MysqlOptions(dsn=server.dsn, **options))


def _drain(src: MysqlSource, table: str, limit: int = 400) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(limit):
        batch = src.poll(1000, 1)
        if batch is None:
            if src.caught_up():
                return out
            continue
        out += [json.loads(c.to_json()) for c in batch.changes() if c.table == table]
    raise AssertionError("source never caught up")


def test_tls_with_ca_connects_and_streams(tls_server: tuple[MariaDB, Path]) -> None:
    server, ca = tls_server
    t = f"tls_{uuid.uuid4().hex[:8]}"
    root = server.root_connect(DB)
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(20))")
        src = _source(server, ssl_ca=str(ca), include=[f"{DB}.{t}"])
        src.open(None)
        try:
            with root.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s "
                            "AND COMMAND LIKE 'Binlog Dump%%'", (server.user,))
                dumps_before = cur.fetchone()[0]
                for i in range(50):
                    cur.execute(f"INSERT INTO {t} VALUES ({i}, 'over-tls-{i}')")
                cur.execute(f"UPDATE {t} SET s = 'changed' WHERE id = 7")
            rows = _drain(src, t)
            with root.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s "
                            "AND COMMAND LIKE 'Binlog Dump%%'", (server.user,))
                dumps = cur.fetchone()[0]
        finally:
            src.close()
    finally:
        root.close()
    assert [r["after"]["id"] for r in rows if r["op"] == "insert"] == list(range(50))
    assert rows[-1]["op"] == "update" and rows[-1]["after"] == {"id": 7, "s": "changed"}
    # the binlog connection itself is the REQUIRE SSL user's: it could only be opened over TLS
    assert dumps_before == 0 and dumps == 1


def test_tls_session_is_encrypted(tls_server: tuple[MariaDB, Path]) -> None:
    """The connection settings the source uses (Endpoint.settings, shared by preflight, the binlog stream and
    snapshots) give a verified TLS session: a cipher, and a server certificate checked against ssl_ca."""
    import pymysql

    server, ca = tls_server
    src = _source(server, ssl_ca=str(ca))
    src.open(None)
    try:
        settings = src.ep.settings()
    finally:
        src.close()
    conn = pymysql.connect(**settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            cipher = cur.fetchone()[1]
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            version = cur.fetchone()[1]
    finally:
        conn.close()
    assert cipher and version.startswith("TLS"), (cipher, version)


def test_without_ssl_ca_fails_with_one_clear_line(tls_server: tuple[MariaDB, Path]) -> None:
    server, _ = tls_server
    with pytest.raises(DbusError) as err:
        _source(server).open(None)
    msg = str(err.value)
    assert "\n" not in msg and server.password not in msg
    assert f"{server.user}@127.0.0.1" in msg and f"127.0.0.1:{server.port}" in msg
    assert "ssl_ca" in msg, f"the message does not point at TLS: {msg!r}"


def test_wrong_ca_fails_with_one_clear_line(tls_server: tuple[MariaDB, Path], tmp_path: Path) -> None:
    server, _ = tls_server
    other_ca, _, _ = _write_ca_and_server_cert(tmp_path / "other", cn="some other CA")
    with pytest.raises(DbusError) as err:
        _source(server, ssl_ca=str(other_ca)).open(None)
    msg = str(err.value)
    assert "\n" not in msg and server.password not in msg
    assert msg.startswith(f"cannot connect to MySQL at 127.0.0.1:{server.port} as {server.user}: ")
    assert "certificate verify failed" in msg.lower()
