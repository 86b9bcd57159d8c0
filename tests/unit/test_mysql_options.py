"""Options of the `mysql` source: `dsn` as one DSN or a list of hosts (primary first), with one-line errors
naming the list index; and the MySQL GTID forms (`server_uuid:1-5:7` sets) as `start` takes them, as
COM_BINLOG_DUMP_GTID sends them, and as a GTID event carries one."""

from __future__ import annotations

import copy
import struct
import uuid

import pytest

from dbus_ray.config import ConfigError, parse_config
from dbus_ray.config_docs import type_text
from dbus_ray.mysql.gtid_set import GtidSet
from dbus_ray.mysql.options import MysqlOptions, parse_start
from dbus_ray.mysql.replica import HEADER, RawEvent, mysql_gtid
from dbus_ray.mysql.source import MysqlSource
from tests.support.options import source_error

BASE = {"name": "p", "source": {"type": "mysql", "dsn": "mysql://u:pw@h1:3306"},
        "sinks": [{"name": "a", "type": "jsonl", "path": "/tmp/x"}]}
UUID = "3E11FA47-71CA-11E1-9E33-C80AA9429562"


def config_error(dsn: object) -> str:
    text = source_error({"type": "mysql", "dsn": dsn}, "configs/x.yaml")
    assert "secret" not in text, text
    return text


# ------------------------------------------------------------------------------------------ dsn list


def test_a_list_of_dsns_is_the_hosts_primary_first() -> None:
    raw = copy.deepcopy(BASE)
    raw["source"]["dsn"] = ["mysql://u:pw@h1:3306", "mysql://v:pw2@h2:3307", "mariadb://w@h3"]
    cfg = parse_config(raw, "configs/x.yaml", {})
    o = cfg.source.options
    assert o.dsns == ["mysql://u:pw@h1:3306", "mysql://v:pw2@h2:3307", "mariadb://w@h3"]
    src = MysqlSource("p", o)
    assert [(e.host, e.port, e.user, e.password) for e in src.eps] == [
        ("h1", 3306, "u", "pw"), ("h2", 3307, "v", "pw2"), ("h3", 3306, "w", "")]
    assert src.host() == "h1:3306 (host 1 of 3)"  # before open: the primary
    one = MysqlSource("p", MysqlOptions(dsn="mysql://u:pw@h1:3306"))
    assert one.host() == "h1:3306" and MysqlOptions(dsn="mysql://u@h").dsns == ["mysql://u@h"]
    assert MysqlOptions(dsn="mysql://u@h").reconnect_attempts == 8


@pytest.mark.parametrize(("dsn", "expected"), [
    ([], "configs/x.yaml: source.dsn: empty list: give one DSN, or a list of them (primary first)"),
    (["mysql://u:secret@h1:3306", "postgres://u:secret@h2:5432"],
     "configs/x.yaml: source.dsn[1]: bad DSN scheme 'postgres': expected mysql://user:password@host:port"),
    (["mysql://u:secret@h1:3306", "mysql://u:secret@h2:99999"],
     "configs/x.yaml: source.dsn[1]: bad DSN port: expected mysql://user:password@host:port"),
    (["mysql://:secret@h1:3306"],
     "configs/x.yaml: source.dsn[0]: DSN has no user: expected mysql://user:password@host:port"),
    (["mysql://u:secret@h1:3306", 5], "configs/x.yaml: source.dsn[1]: expected a string, got int 5"),
    (["mysql://u:secret@h1:3306", "mysql://v:secret@h1:3306"],
     "configs/x.yaml: source.dsn[1]: h1:3306 is also dsn[0]"),
    ({"h": "mysql://u:secret@h1"}, "configs/x.yaml: source.dsn: expected a string or a list, got a mapping"),
    (["mysql://u:se/cret@h1:3306"], "configs/x.yaml: source.dsn[0]: bad DSN port: expected mysql://user:password@"
                                    "host:port (the user or password holds '/': percent-encode it, '/' as %2F)"),
])
def test_bad_dsn_lists_name_the_index(dsn: object, expected: str) -> None:
    assert config_error(dsn).startswith(expected)


def test_a_percent_hint_names_the_listed_dsn() -> None:
    text = config_error(["mysql://u:pw@h1:3306", "mysql://u:se#cret@h2:3306"])
    assert text.startswith("configs/x.yaml: source.dsn[1]: ") and "percent-encode it, '#' as %23" in text, text


def test_reconnect_attempts_is_checked() -> None:
    raw = copy.deepcopy(BASE)
    raw["source"]["reconnect_attempts"] = -1
    with pytest.raises(ConfigError, match=r"source.reconnect_attempts: must not be negative"):
        parse_config(raw, "configs/x.yaml", {})


def test_the_docs_type_of_dsn() -> None:
    import typing

    assert type_text(typing.get_type_hints(MysqlOptions)["dsn"]) == "string or list of string"


# ------------------------------------------------------------------------------------------ MySQL GTID forms


@pytest.mark.parametrize("text", [
    f"{UUID}:1-5",
    f"{UUID}:1-5:7",
    f"{UUID.lower()}:1-5:7:9-12",
    f"{UUID}:1-5:7,24DA1670-0C0C-11E8-8442-00059A3C7B00:1-3",
    f"{UUID}:1-5, 24DA1670-0C0C-11E8-8442-00059A3C7B00:2",
])
def test_mysql_gtid_sets_are_a_gtid_start(text: str) -> None:
    assert parse_start(text) == ("gtid", text)


@pytest.mark.parametrize("text", [f"{UUID}", f"{UUID}:", f"{UUID}:1-", f"{UUID}:a-5", f"{UUID[:-1]}:1-5",
                                  f"{UUID}:1-5,", f"{UUID}:1-5;{UUID}:7"])
def test_bad_mysql_gtid_sets_are_refused(text: str) -> None:
    with pytest.raises(Exception, match="expected latest, earliest, binlog-file:offset or a GTID set"):
        parse_start(text)


def test_a_binlog_position_is_not_taken_for_a_gtid() -> None:
    assert parse_start("binlog.000042:1234") == ("position", ("binlog.000042", 1234))
    assert parse_start("mysql-bin.000001:4") == ("position", ("mysql-bin.000001", 4))


def test_a_mysql_gtid_set_as_com_binlog_dump_gtid_sends_it() -> None:
    """The wire form (MySQL's Gtid_set::encode): number of SIDs, then per SID its 16 bytes, the number of
    intervals and each interval as [start, end + 1), all little-endian 8-byte integers."""
    gtids = GtidSet.parse(f"{UUID}:1-5:7")
    sid = uuid.UUID(UUID).bytes
    expected = struct.pack("<Q", 1) + sid + struct.pack("<Q", 2) + struct.pack("<QQ", 1, 6) + struct.pack("<QQ", 7, 8)
    assert gtids.encode() == expected and len(expected) == 64
    two = GtidSet.parse(f"{UUID}:1-5,24DA1670-0C0C-11E8-8442-00059A3C7B00:2")
    assert two.encode()[:8] == struct.pack("<Q", 2) and len(two.encode()) == 8 + 2 * (16 + 8 + 16)


def test_a_mysql_gtid_event_names_its_gtid() -> None:
    """A GTID_LOG_EVENT (type 33): flags byte, the 16-byte server_uuid, the 8-byte sequence number."""
    body = b"\x01" + uuid.UUID(UUID).bytes + struct.pack("<Q", 77) + b"\x02" + bytes(16)
    header = struct.pack("<IBIIIH", 1_700_000_000, 33, 5, 19 + len(body), 1234, 0)
    data = b"\x00" + header + body
    assert len(b"\x00" + header) == HEADER
    assert mysql_gtid(RawEvent(None, data, False)) == f"{UUID.lower()}:77"


# ------------------------------------------------------------------------------------------ dbus status


def test_dbus_status_shows_the_host_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    from dbus_ray.cli import print_rows
    from dbus_ray.client import Bus

    class Listed(Bus):
        def list(self, project: str | None = None) -> list[dict]:
            return [{"name": "orders", "project": "default", "state": "running", "desired": "running", "node": "n1",
                     "epoch": 3, "version": 1, "error": None,
                     "status": {"rows_read": 10, "rows_delivered": 10, "lag_seconds": 0.5,
                                "source_host": "db2:3306 (host 2 of 2)", "checkpoint": {"source": {"server": "2"}}}}]

    rows = Listed(None).rows()
    assert rows[0]["source_host"] == "db2:3306 (host 2 of 2)"
    print_rows(rows, "table")
    header, line = capsys.readouterr().out.splitlines()
    at = header.index("SOURCE_HOST")
    assert line[at:].startswith("db2:3306 (host 2 of 2)  "), (header, line)
