"""Source `binlog_files`: reads MySQL/MariaDB binlog files from a directory or glob (archived binlogs, backups,
files downloaded from a managed service after the server purged them) with the `mysql` source's own stream and
decoder, so its rows, row model and checkpoints (`{"file", "offset", "skip", "gtid", "gtid_pos", "server"}`, see
`dbus_ray.mysql.offset`) are the `mysql` source's: on MariaDB files `gtid_pos` is the GTID state at the offset
(the start file's GTID_LIST event and the GTIDs after it, then followed by the stream) and `server` the
events' server_id, so the `mysql` source accepts such a checkpoint on the server that wrote the files.

- `files`: a directory (its files named like `binlog.000042`) or a glob; they are read in binlog order from
  `start` (`earliest`: the first file; `latest`: the end of the last one; `FILE:OFFSET`: a transaction's start)
  or from the checkpoint. The events come from `dbus_ray.mysql.files.FileReader` (file checks, checksums, gaps).
- `follow: false` stops at the end of the last file: the source is then caught up and `dbus run
  --until-caught-up` ends. `follow: true` follows a growing last file and the files that appear after it.
- Column names and primary keys: from the TABLE_MAP events' optional metadata when the server wrote them
  (`binlog_row_metadata=FULL`: MariaDB 10.5+, MySQL 8.0.1+); else from the information_schema of the server
  `dsn` names, for the rows after the last DDL on the table in the files, recorded in the schema history the
  checkpoints carry (`dbus_ray.mysql.file_schema`); a row that information_schema cannot describe, or any such
  table without `dsn`, stops the source with one line saying what to set. DDL rows carry the table's
  definition (`change`) only with `dsn`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dbus_ray.config import Invalid
from dbus_ray.model import RowBatch
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql.file_schema import FileSchema
from dbus_ray.mysql.files import BinlogFiles, FileReader, end_of, file_header, gtid_state_at
from dbus_ray.mysql.keys import MessageKeys
from dbus_ray.mysql.offset import BinlogOffset
from dbus_ray.mysql.options import FILE_POS_RE, check_message_key_columns, parse_dsn
from dbus_ray.mysql.streaming import BinlogStream
from dbus_ray.registry import Source, source
from dbus_ray.routing import TableMatcher, check_pattern

log = logging.getLogger("dbus.mysql")

#: the stream's target position: never reached (the end of the files is told by the reader's heartbeat)
NEVER = (2**62, 0)


@dataclass
class BinlogFilesOptions:
    # a directory holding binlog files (named like binlog.000042) or a glob of them (e.g. /backups/mysql-bin.*)
    files: str
    # without a checkpoint: earliest (the first file) | latest (the end of the last file) | FILE:OFFSET (a
    # transaction's start, as SHOW BINLOG EVENTS or a row's txid gives it)
    start: str = "earliest"
    # false: stop at the end of the last file (caught up); true: follow a growing file and the files after it
    follow: bool = False
    # the tables to read (db.table globs)
    include: list[str] = field(default_factory=lambda: ["*.*"])
    # ... except these
    exclude: list[str] = field(default_factory=list)
    # leave out gh-ost / pt-online-schema-change shadow tables (see dbus_ray.mysql.ddl.OSC_RE)
    skip_osc_tables: bool = True
    # db.table glob -> the columns that key its row changes instead of the primary key (see dbus_ray.mysql.keys)
    message_key_columns: dict[str, list[str]] = field(default_factory=dict)
    # mysql://user:password@host:port of a server whose information_schema gives the column names and primary key
    # of tables whose TABLE_MAP events carry none (files written without binlog_row_metadata=FULL)
    dsn: str | None = None

    def __post_init__(self) -> None:
        if not str(self.files).strip():
            raise Invalid("files", "must not be empty: a directory of binlog files or a glob of them")
        text = self.start.strip()
        if text not in ("earliest", "latest") and not FILE_POS_RE.match(text):
            raise Invalid("start", f"bad start {self.start!r}: expected earliest, latest or FILE:OFFSET (binlog files "
                                   "are read by position; a GTID set is not supported)")
        if self.dsn is not None:
            parse_dsn(self.dsn)
        for key in ("include", "exclude"):
            for i, pattern in enumerate(getattr(self, key)):
                reason = check_pattern(pattern)
                if reason:
                    raise Invalid(f"{key}[{i}]", reason)
        check_message_key_columns(self.message_key_columns)


def _endpoint(dsn: str | None, pattern: str) -> tuple[cn.Endpoint | None, cn.Endpoint]:
    """(the `dsn` server or None, the endpoint the stream names: the server, or the files)."""
    if dsn is None:
        return None, cn.Endpoint(pattern, 0, "", "")
    d = parse_dsn(dsn)
    ep = cn.Endpoint(d.host, d.port, d.user, d.password)
    return ep, ep


@source("binlog_files")
class BinlogFilesSource(Source):
    Options = BinlogFilesOptions

    def __init__(self, pipeline: str, options: BinlogFilesOptions) -> None:
        super().__init__(pipeline, options)
        self.files = BinlogFiles(options.files)
        self.matcher = TableMatcher(options.include, options.exclude)
        self.keys = MessageKeys(pipeline, options.message_key_columns)
        self.catalog, self.ep = _endpoint(options.dsn, options.files)
        self.schema: FileSchema | None = None
        self.stream: BinlogStream | None = None

    @classmethod
    def parse_position(cls, text: str) -> dict[str, Any]:
        """`binlog.000042:1234` (the start of a transaction) -> a checkpoint."""
        return BinlogOffset.parse(text).to_dict()

    def open(self, checkpoint: dict[str, Any] | None) -> None:
        o: BinlogFilesOptions = self.options
        listing = self.files.listing()
        first = next(iter(listing))
        header = file_header(listing[first])
        variables = {"server_id": str(header.server_id)} if header.mariadb else {}
        info = cn.ServerInfo(header.server_version, header.mariadb, "", 0, None, variables)
        if checkpoint:
            start, what = BinlogOffset.from_dict(checkpoint), "checkpoint"
        else:
            what = f"start {o.start}"
            if o.start == "earliest":
                start = BinlogOffset(first, 4)
            elif o.start == "latest":
                last = list(listing)[-1]
                start = BinlogOffset(last, end_of(listing[last]))
            else:
                start = BinlogOffset.parse(o.start.strip())
        if header.mariadb and start.gtid_pos is None and start.file in listing:  # the GTID state there, as the
            start = start.with_(gtid_pos=gtid_state_at(listing[start.file], start.offset))  # mysql source keeps it
        if start.server is None:
            start = start.with_(server=info.server)
        history = (checkpoint or {}).get("schema_history")
        self.schema = FileSchema(self.files, self.catalog, self.matcher, o.skip_osc_tables, history)
        files, follow = self.files, o.follow

        def reader(at: BinlogOffset) -> FileReader:
            return FileReader(files, at.file, at.offset, follow, what)

        self.stream = BinlogStream(self.pipeline, self.ep, info, 0, "", self.schema,
                                   start.with_(selected=None, schema_history=None, fences=None), NEVER, None,
                                   reader=reader)
        skip = f" (skip {start.skip} rows of {start.gtid or 'its transaction'})" if start.skip else ""
        log.info("[%s] binlog_files source at %s:%s%s of %s (%s), follow %s", self.pipeline, start.file, start.offset,
                 skip, o.files, header.server_version, o.follow)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def host(self) -> str | None:
        return self.options.files

    def checkpoint(self) -> dict[str, Any]:
        assert self.stream is not None and self.schema is not None
        at = self.stream.offset()
        return at.with_(schema_history=self.schema.history_json(at.file, at.offset)).to_dict()

    def position(self) -> dict[str, Any] | None:
        if self.stream is None or not self.stream.between_transactions():
            return None
        return self.checkpoint()

    def caught_up(self) -> bool:
        """At the end of the files (with `follow`: of what is there now) with every row handed out."""
        return self.stream is not None and self.stream.handed_out_to(NEVER)

    def lag_seconds(self) -> float:
        return 0.0 if self.stream is None else self.stream.lag_seconds()

    def poll(self, max_rows: int, seq: int) -> RowBatch | None:
        assert self.stream is not None
        got = self.stream.read(max_rows)
        if got is None:
            return None
        parts, ts = got
        return self.keys.apply(RowBatch(self.pipeline, seq, parts, self.checkpoint(), ts))

