"""Options of source `binlog_files` (a config error is one line naming the option) and the file listing: binlog
order, the next file's name, files of two binlogs in one directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbus_ray.errors import DbusError
from dbus_ray.mysql.files import BinlogFiles, successor
from dbus_ray.sources.binlog_files import BinlogFilesOptions
from tests.support.options import source_error, source_options

BASE = {"type": "binlog_files", "files": "/backups"}


@pytest.mark.parametrize(("source", "message"), [
    ({"files": " "}, "source.files: must not be empty"),
    ({"start": "0-1-5"}, "source.start: bad start '0-1-5': expected earliest, latest or FILE:OFFSET"),
    ({"dsn": "postgres://x@h"}, "source.dsn: bad DSN scheme 'postgres'"),
    ({"include": ["nodot"]}, "source.include[0]"),
    ({"follow": "sometimes"}, "source.follow"),
])
def test_option_errors_are_one_line_naming_the_option(source: dict, message: str) -> None:
    text = source_error({**BASE, **source}, "f.yaml")
    assert text.startswith(f"f.yaml: {message}"), text


def test_defaults_read_every_file_once_from_the_first() -> None:
    o = source_options(BASE)
    assert isinstance(o, BinlogFilesOptions)
    assert (o.start, o.follow, o.include, o.dsn) == ("earliest", False, ["*.*"], None)


def test_listing_in_binlog_order_and_the_next_name(tmp_path: Path) -> None:
    for name in ("mysql-bin.000010", "mysql-bin.000009", "mysql-bin.index", "mysql-bin.001000"):
        (tmp_path / name).write_bytes(b"")
    assert list(BinlogFiles(str(tmp_path)).listing()) == ["mysql-bin.000009", "mysql-bin.000010", "mysql-bin.001000"]
    assert list(BinlogFiles(str(tmp_path / "*.00001*")).listing()) == ["mysql-bin.000010"]
    assert successor("mysql-bin.000009") == "mysql-bin.000010" and successor("b.999999") == "b.1000000"
    (tmp_path / "relay-bin.000001").write_bytes(b"")
    with pytest.raises(DbusError, match=r"files of several binlogs \(mysql-bin, relay-bin\): give a glob"):
        BinlogFiles(str(tmp_path)).listing()


def test_a_server_version_that_is_not_ascii_is_refused_in_one_line(tmp_path: Path) -> None:
    """The FORMAT_DESCRIPTION event's server version (it says MariaDB or MySQL) is read exactly or refused, never
    decoded with replacement characters."""
    from dbus_ray.errors import DbusError
    from dbus_ray.mysql.files import file_header
    from tests.support import mysql8_binlog as w

    data = bytearray(w.BinlogFile().bytes())
    data[4 + 19 + 2] = 0xFF  # the first byte of the server version
    path = tmp_path / "binlog.000001"
    path.write_bytes(bytes(data))
    with pytest.raises(DbusError) as err:
        file_header(str(path))
    assert str(err.value) == (f"binlog binlog.000001:4: the FORMAT_DESCRIPTION event's server version is not ASCII: "
                              f"not a binlog file: {path}")
