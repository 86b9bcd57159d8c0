"""The `mysql` source's checks before it reads (against a real MariaDB): binlog format, row metadata and
row image, missing grants, a wrong password, an unreachable server, a purged binlog file named, a bad
`start` option, and the stable automatic server_id."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import parse_config
from dbus_ray.errors import DbusError
from dbus_ray.mysql.connection import auto_server_id
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from tests.support.helpers import execute

pytestmark = pytest.mark.integration


def source(mariadb: Any, **options: Any) -> MysqlSource:
    options.setdefault("server_id", 7001)
    return MysqlSource("mysql-test", MysqlOptions(dsn=mariadb.dsn, **options))


# ------------------------------------------------------------------------------------------ preflight


def test_preflight_reports_bad_binlog_format_with_the_fix(mariadb: Any, root: Any) -> None:
    execute(root, "SET GLOBAL binlog_format = 'STATEMENT'")
    try:
        with pytest.raises(DbusError) as err:
            source(mariadb).open(None)
    finally:
        execute(root, "SET GLOBAL binlog_format = 'ROW'")
    msg = str(err.value)
    assert msg == (
        f"binlog_format is STATEMENT on 127.0.0.1:{mariadb.port}; set binlog_format=ROW "
        "(SET GLOBAL binlog_format=ROW and in my.cnf)"
    )


def test_preflight_reports_row_metadata(mariadb: Any, root: Any) -> None:
    execute(root, "SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        with pytest.raises(
            DbusError, match=r"binlog_row_metadata is MINIMAL on .*SET GLOBAL binlog_row_metadata=FULL"
        ):
            source(mariadb).open(None)
    finally:
        execute(root, "SET GLOBAL binlog_row_metadata = 'FULL'")


def test_preflight_warns_on_minimal_row_image(mariadb: Any, root: Any, caplog: Any) -> None:
    execute(root, "SET GLOBAL binlog_row_image = 'MINIMAL'")
    try:
        src = source(mariadb)
        src.open(None)
        src.close()
    finally:
        execute(root, "SET GLOBAL binlog_row_image = 'FULL'")
    assert any("binlog_row_image is MINIMAL" in r.getMessage() for r in caplog.records)


def test_preflight_names_missing_grants(mariadb: Any, root: Any) -> None:
    user = f"weak{uuid.uuid4().hex[:6]}"
    execute(
        root,
        f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw-secret'",
        f"GRANT SELECT ON *.* TO '{user}'@'127.0.0.1'",
    )
    try:
        opts = MysqlOptions(dsn=f"mysql://{user}:pw-secret@127.0.0.1:{mariadb.port}", server_id=7002)
        with pytest.raises(DbusError) as err:
            MysqlSource("t", opts).open(None)
    finally:
        execute(root, f"DROP USER '{user}'@'127.0.0.1'")
    msg = str(err.value)
    assert "\n" not in msg and "pw-secret" not in msg
    assert f"user {user}@127.0.0.1 lacks REPLICATION SLAVE, BINLOG MONITOR" in msg
    assert f"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'" in msg


def test_access_denied_names_user_not_password(mariadb: Any) -> None:
    opts = MysqlOptions(dsn=f"mysql://dbus:wrong-secret@127.0.0.1:{mariadb.port}", server_id=7003)
    with pytest.raises(DbusError) as err:
        MysqlSource("t", opts).open(None)
    msg = str(err.value)
    assert msg.startswith(f"access denied for dbus@127.0.0.1 on 127.0.0.1:{mariadb.port}")
    assert "wrong-secret" not in msg and "\n" not in msg


def test_unreachable_server_is_one_line(mariadb: Any) -> None:
    from dbus_ray.devstack import free_port

    port = free_port()
    opts = MysqlOptions(dsn=f"mysql://dbus:secret-pw@127.0.0.1:{port}", server_id=7004)
    with pytest.raises(DbusError, match=f"cannot connect to MySQL at 127.0.0.1:{port} as dbus") as err:
        MysqlSource("t", opts).open(None)
    assert "secret-pw" not in str(err.value)


def test_purged_binlog_file_is_named(mariadb: Any) -> None:
    src = source(mariadb)
    with pytest.raises(
        DbusError, match=r"binlog file binlog\.999999 \(checkpoint\) is no longer on .*purged"
    ):
        src.open({"file": "binlog.999999", "offset": 4, "skip": 0})


def test_bad_start_option_is_rejected() -> None:
    cfg = {
        "name": "x",
        "source": {"type": "mysql", "dsn": "mysql://u:p@h:1", "start": "yesterday"},
        "sinks": [{"name": "n", "type": "null"}],
    }
    with pytest.raises(Exception, match=r"source.start: bad start 'yesterday'"):
        parse_config(cfg, "x.yaml", {})


def test_auto_server_id_is_stable_and_avoids_clashes(tmp_path: Path) -> None:
    a = auto_server_id("p1", "h:1", tmp_path)
    assert a == auto_server_id("p1", "h:1", tmp_path)
    assert a >= 0xC0000000
    (tmp_path / str(a)).write_text("someone-else@h:1\n")
    b = auto_server_id("p1", "h:1", tmp_path / "other")
    assert b == a
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / str(a)).write_text("someone-else@h:1\n")
    assert auto_server_id("p1", "h:1", tmp_path / "x") == a + 1
