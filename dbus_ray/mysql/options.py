"""Options of the `mysql` source: its config keys (`MysqlOptions`, checked when the config loads, each
error naming its key), the DSN (one, or a list of hosts: primary first) and the `start` forms."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from dbus_ray.config import Invalid

MARIADB_GTID_RE = re.compile(r"^\d+-\d+-\d+(,\s*\d+-\d+-\d+)*$")
MYSQL_GTID_RE = re.compile(r"^[0-9a-fA-F-]{36}(:\d+(-\d+)?)+(,\s*[0-9a-fA-F-]{36}(:\d+(-\d+)?)+)*$")
FILE_POS_RE = re.compile(r"^([^:\s]+):(\d+)$")


@dataclass
class MysqlDsn:
    user: str
    password: str
    host: str
    port: int


def parse_dsn(dsn: str) -> MysqlDsn:
    """`mysql://user:password@host:port` -> parts. Raises Invalid (key "dsn") naming what is wrong,
    never echoing the password."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb"):
        shown = parts.scheme or dsn.split(":", 1)[0]
        raise Invalid("dsn", f"bad DSN scheme {shown!r}: expected mysql://user:password@host:port")
    try:
        port = parts.port or 3306
    except ValueError:
        raise Invalid("dsn", "bad DSN port: expected mysql://user:password@host:port") from None
    if not parts.hostname:
        raise Invalid("dsn", "DSN has no host: expected mysql://user:password@host:port")
    if not parts.username:
        raise Invalid("dsn", "DSN has no user: expected mysql://user:password@host:port")
    return MysqlDsn(unquote(parts.username), unquote(parts.password or ""), parts.hostname, port)


def parse_start(start: str) -> tuple[str, Any]:
    """`latest` | `earliest` | `file:offset` | GTID set -> (kind, value)."""
    text = start.strip()
    if text in ("latest", "earliest"):
        return text, None
    m = FILE_POS_RE.match(text)
    if m and not MYSQL_GTID_RE.match(text):
        return "position", (m.group(1), int(m.group(2)))
    if MARIADB_GTID_RE.match(text) or MYSQL_GTID_RE.match(text):
        return "gtid", text
    raise Invalid(
        "start", f"bad start {start!r}: expected latest, earliest, binlog-file:offset or a GTID set"
    )


def parse_dsns(dsn: str | list[str]) -> list[MysqlDsn]:
    """`dsn` as one DSN or a list of them (the hosts, primary first) -> their parts; Invalid naming the list
    index of a bad one (key `dsn[i]`)."""
    if isinstance(dsn, str):
        return [parse_dsn(dsn)]
    if not dsn:
        raise Invalid("dsn", "empty list: give one DSN, or a list of them (primary first)")
    out = []
    for i, one in enumerate(dsn):
        if not isinstance(one, str):
            raise Invalid(f"dsn[{i}]", f"expected a string mysql://user:password@host:port, got {type(one).__name__}")
        try:
            out.append(parse_dsn(one))
        except Invalid as exc:
            raise Invalid(f"dsn[{i}]", exc.reason) from None
    seen: dict[tuple[str, int], int] = {}
    for i, d in enumerate(out):
        if (d.host, d.port) in seen:
            raise Invalid(f"dsn[{i}]", f"{d.host}:{d.port} is also dsn[{seen[d.host, d.port]}]")
        seen[d.host, d.port] = i
    return out


@dataclass
class MysqlOptions:
    # `mysql://user:password@host:port` (percent-encode `/ ? # @` in user and password), or a list of them: the
    # hosts of one GTID replication topology, primary first (a lost host: the next one, resumed by GTID)
    dsn: str | list[str]
    server_id: int | str = "auto"
    start: str = "latest"  # latest | earliest | file:offset | GTID set
    include: list[str] = field(default_factory=lambda: ["*.*"])
    exclude: list[str] = field(default_factory=list)
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    snapshot: Literal["never", "initial", "when_needed"] = "never"
    chunk_rows: int = 10_000  # rows per snapshot query (keyset page)
    max_rows_per_second: int | None = None  # snapshot read throttle
    snapshot_parallelism: int = 1  # snapshot worker actors reading chunks at once (1: the reader reads them)
    decoders: int = 0  # decoder actors decoding the binlog's rows (0: the reader decodes them; decode_pool)
    skip_osc_tables: bool = True  # leave out gh-ost / pt-online-schema-change shadow tables (see OSC_RE)
    schema_history: bool = False  # accept binlog_row_metadata MINIMAL (see dbus_ray.mysql.schema_history)
    # db.table glob -> the columns that key its row changes instead of the primary key (see dbus_ray.mysql.keys)
    message_key_columns: dict[str, list[str]] = field(default_factory=dict)
    # an update that changes the key: a delete of the old key then an insert of the new (as Debezium), or one update
    key_change: Literal["delete_insert", "update"] = "delete_insert"
    # reconnects to a host after its binlog connection is lost, then the next host of `dsn` (resumed by GTID)
    reconnect_attempts: int = 8

    @property
    def dsns(self) -> list[str]:
        """The DSNs in the order they are tried (primary first)."""
        return [self.dsn] if isinstance(self.dsn, str) else list(self.dsn)

    def __post_init__(self) -> None:
        parse_dsns(self.dsn)
        if self.reconnect_attempts < 0:
            raise Invalid("reconnect_attempts", "must not be negative")
        if self.chunk_rows < 1:
            raise Invalid("chunk_rows", "must be at least 1")
        if self.snapshot_parallelism < 1:
            raise Invalid("snapshot_parallelism", "must be at least 1")
        if self.decoders < 0:
            raise Invalid("decoders", "must not be negative")
        if self.max_rows_per_second is not None and self.max_rows_per_second < 1:
            raise Invalid("max_rows_per_second", "must be at least 1 (or left out: no throttle)")
        if isinstance(self.server_id, str) and self.server_id != "auto":
            raise Invalid("server_id", f"expected an integer or 'auto', got {self.server_id!r}")
        if isinstance(self.server_id, int) and not 1 <= self.server_id < 2**32:
            raise Invalid("server_id", "must be between 1 and 4294967295")
        parse_start(self.start)
        from dbus_ray.routing import check_pattern

        check_message_key_columns(self.message_key_columns)
        for key in ("include", "exclude"):
            for i, pattern in enumerate(getattr(self, key)):
                reason = check_pattern(pattern)
                if reason:
                    raise Invalid(f"{key}[{i}]", reason)


def check_message_key_columns(value: Any) -> None:
    """`message_key_columns` ({db.table pattern: [columns]}) of a binlog source; Invalid naming the bad entry."""
    from dbus_ray.routing import check_pattern

    if not isinstance(value, dict):
        raise Invalid("message_key_columns", "expected a mapping of db.table patterns to lists of columns")
    for pattern, cols in value.items():
        reason = check_pattern(str(pattern))
        if reason:
            raise Invalid(f"message_key_columns[{pattern!r}]", reason)
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
            raise Invalid(f"message_key_columns[{pattern!r}]", "expected a non-empty list of column names")
