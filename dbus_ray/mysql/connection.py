"""Connecting to a MySQL/MariaDB server as a binlog reader: connection settings from the DSN, the
checks done at open (binlog settings, grants) with one-line errors that say how to fix them, binlog
positions (SHOW MASTER STATUS / SHOW BINARY LOGS) and the `server_id: auto` choice."""

from __future__ import annotations

import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from dbus_ray.errors import DbusError

log = logging.getLogger("dbus.mysql")

#: `server_id: auto` ids live in [AUTO_ID_BASE, 2**32): far above the ids people give servers.
AUTO_ID_BASE = 0xC0000000
AUTO_ID_SPAN = 2**32 - AUTO_ID_BASE
SERVER_ID_DIR = "~/.dbus/server_ids"

ER_ACCESS_DENIED = 1045
ER_DBACCESS_DENIED = 1044
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_PARSE = 1064
ER_MASTER_FATAL_READING_BINLOG = 1236
ER_SLAVE_SAME_ID = 4052  # MariaDB: "A slave with the same server_uuid/server_id is already connected"


class Unreachable(DbusError):
    """The server does not answer: a connect failed, or a lost binlog connection could not be re-established
    (with several hosts in `dsn`, the source moves to the next one)."""


@dataclass
class Endpoint:
    """Where and as whom to connect (the password never leaves this object in messages)."""

    host: str
    port: int
    user: str
    password: str
    ssl: dict[str, str] | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def settings(self) -> dict[str, Any]:
        """Keyword arguments for pymysql.connect / BinLogStreamReader(connection_settings=...)."""
        out: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "connect_timeout": 10,
        }
        if self.ssl:
            out["ssl"] = dict(self.ssl)
        else:
            out["ssl_disabled"] = True  # never a TLS session that checks no certificate
        return out


def connect(ep: Endpoint, **kwargs: Any) -> pymysql.connections.Connection:
    """A pymysql connection (autocommit); failures become one-line DbusErrors without the password."""
    settings = ep.settings()
    settings.update(autocommit=True, **kwargs)
    try:
        return pymysql.connect(**settings)
    except pymysql.err.OperationalError as exc:
        raise connect_error(ep, exc) from None


def connect_error(ep: Endpoint, exc: BaseException) -> DbusError:
    code = exc.args[0] if exc.args else None
    if code in (ER_ACCESS_DENIED, ER_DBACCESS_DENIED):
        hint = "" if ep.ssl else ", or set source.ssl_ca when the account requires TLS (REQUIRE SSL)"
        return DbusError(
            f"access denied for {ep.user}@{ep.host} on {ep.where}: check the user and password in source.dsn{hint}"
        )
    text = (
        str(exc.args[1] if len(exc.args) > 1 else exc).replace(ep.password, "***")
        if ep.password
        else str(exc)
    )
    return Unreachable(f"cannot connect to MySQL at {ep.where} as {ep.user}: {text.splitlines()[0]}")


@dataclass
class ServerInfo:
    """What preflight found out about the server."""

    version: str
    mariadb: bool
    file: str  # binlog position current at open
    position: int
    gtid: str | None
    variables: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def server(self) -> str | None:
        """Whose binlog this is: MySQL `@@server_uuid`, MariaDB `@@server_id` (as a string)."""
        return self.variables.get("server_uuid") or self.variables.get("server_id") or None

    @property
    def gtid_mode_on(self) -> bool:
        """MySQL gtid_mode=ON: every transaction has a GTID (its executed set says which were read)."""
        return self.variables.get("gtid_mode", "").upper() == "ON"

    @property
    def has_row_metadata(self) -> bool:
        return self.variables.get("binlog_row_metadata", "").upper() == "FULL"


def version_tuple(version: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def _fix(setting: str, value: str) -> str:
    return f"set {setting}={value} (SET GLOBAL {setting}={value} and in my.cnf)"


def master_status(conn: pymysql.connections.Connection, ep: Endpoint) -> tuple[str, int]:
    """(file, position) the server writes next (SHOW BINARY LOG STATUS, or SHOW MASTER STATUS)."""
    file, pos, _executed = binlog_status(conn, ep)
    return file, pos


def binlog_status(conn: pymysql.connections.Connection, ep: Endpoint) -> tuple[str, int, str | None]:
    """(file, position, MySQL's executed GTID set there or None) the server writes next."""
    with conn.cursor() as cur:
        try:
            try:
                cur.execute("SHOW BINARY LOG STATUS")
            except pymysql.err.ProgrammingError as exc:
                if exc.args[0] != ER_PARSE:
                    raise
                cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
        except (pymysql.err.OperationalError, pymysql.err.ProgrammingError) as exc:
            raise grant_error(ep, exc, "SHOW MASTER STATUS") from None
    if not row:
        raise DbusError(
            f"binary log is off on {ep.where}; start the server with log_bin (in my.cnf, restart)"
        )
    return str(row[0]), int(row[1]), (None if len(row) < 5 or row[4] is None else str(row[4]))


def binary_logs(conn: pymysql.connections.Connection, ep: Endpoint) -> list[tuple[str, int]]:
    """[(file, size)] of the binlog files the server still has, oldest first."""
    with conn.cursor() as cur:
        try:
            cur.execute("SHOW BINARY LOGS")
        except (pymysql.err.OperationalError, pymysql.err.ProgrammingError, pymysql.err.InternalError) as exc:
            raise grant_error(ep, exc, "SHOW BINARY LOGS") from None
        return [(str(r[0]), int(r[1])) for r in cur.fetchall()]


def grant_error(ep: Endpoint, exc: BaseException, what: str) -> DbusError:
    code = exc.args[0] if exc.args else None
    if code in (ER_SPECIFIC_ACCESS_DENIED, ER_ACCESS_DENIED, ER_DBACCESS_DENIED):
        return DbusError(
            f"user {ep.user}@{ep.host} may not run {what} on {ep.where}; "
            f"GRANT REPLICATION CLIENT ON *.* TO '{ep.user}'@'<host>' (BINLOG MONITOR on MariaDB >= 10.5)"
        )
    return DbusError(f"{what} failed on {ep.where}: {exc.args[-1] if exc.args else exc}")


def global_privileges(grants: list[str]) -> tuple[set[str], set[str], bool]:
    """(privileges ON *.*, privileges on some database or table, grants include a role) from SHOW GRANTS."""
    glob: set[str] = set()
    some: set[str] = set()
    role = False
    for line in grants:
        m = re.match(r"GRANT (.+?) ON (\S+) TO ", line, re.I)
        if not m:
            if re.match(r"GRANT [`'\w@%.-]+ TO ", line, re.I):
                role = True
            continue
        privs = {p.strip().upper() for p in m.group(1).split(",")}
        (glob if m.group(2) == "*.*" else some).update(privs)
        some.update(privs)
    return glob, some, role


def preflight(conn: pymysql.connections.Connection, ep: Endpoint, schema_history: bool = False) -> ServerInfo:
    """Check that the server can be read as a row-based binlog by this user; raise DbusError (one line
    naming the setting or grant and the statement that fixes it) when not. `schema_history` (the source
    option) accepts binlog_row_metadata other than FULL on servers that have the setting."""
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0])
        cur.execute(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', "
            "'binlog_row_metadata', 'gtid_binlog_pos', 'gtid_executed', 'gtid_mode', 'binlog_checksum', "
            "'server_id', 'server_uuid')"
        )
        variables = {str(k).lower(): str(v) for k, v in cur.fetchall()}
        cur.execute("SHOW GRANTS")
        grants = [str(r[0]) for r in cur.fetchall()]
    mariadb = "mariadb" in version.lower()
    where = ep.where
    warnings: list[str] = []
    if variables.get("log_bin", "OFF").upper() not in ("ON", "1"):
        raise DbusError(
            f"binary log is off on {where}; start the server with log_bin=ON (in my.cnf, needs a restart)"
        )
    fmt = variables.get("binlog_format", "").upper()
    if fmt != "ROW":
        raise DbusError(f"binlog_format is {fmt or 'unknown'} on {where}; {_fix('binlog_format', 'ROW')}")
    image = variables.get("binlog_row_image", "FULL").upper()
    if image in ("MINIMAL", "NOBLOB"):
        warnings.append(
            f"binlog_row_image is {image} on {where}: images leave columns out (null, and named in each row's "
            f"`absent`); {_fix('binlog_row_image', 'FULL')}"
        )
    elif image not in ("FULL", "FULL_NODUP"):
        raise DbusError(f"binlog_row_image is {image} on {where}; {_fix('binlog_row_image', 'FULL')}")
    v = version_tuple(version)
    needs_metadata = v >= (10, 5, 0) if mariadb else v >= (8, 0, 1)
    metadata = variables.get("binlog_row_metadata")
    if needs_metadata and (metadata or "").upper() != "FULL":
        shown = metadata or "unknown"
        if not schema_history:
            raise DbusError(
                f"binlog_row_metadata is {shown} on {where}; {_fix('binlog_row_metadata', 'FULL')}, "
                "or set source.schema_history: true"
            )
        warnings.append(
            f"binlog_row_metadata is {shown} on {where}: column names come from the schema history kept with "
            "the checkpoints (source.schema_history), else from information_schema"
        )
    if metadata is None:
        warnings.append(
            f"{where} has no binlog_row_metadata: column names come from the schema history kept with the "
            "checkpoints, else from information_schema (today's schema)"
        )
    glob, some, role = global_privileges(grants)
    if not role and "ALL PRIVILEGES" not in glob:
        missing = []
        if "REPLICATION SLAVE" not in glob:
            missing.append("REPLICATION SLAVE")
        if not glob & {"REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"}:
            missing.append("BINLOG MONITOR" if mariadb and v >= (10, 5, 2) else "REPLICATION CLIENT")
        if "SELECT" not in some and "ALL PRIVILEGES" not in some:
            missing.append("SELECT")
        if missing:
            privs = ", ".join(missing)
            grant = f"GRANT {privs} ON *.* TO '{ep.user}'@'<host>'"
            raise DbusError(f"user {ep.user}@{ep.host} lacks {privs} on {where}; {grant}")
    file, pos = master_status(conn, ep)
    gtid = variables.get("gtid_binlog_pos") if mariadb else variables.get("gtid_executed")
    for w in warnings:
        log.warning(w)
    return ServerInfo(version, mariadb, file, pos, gtid or None, variables, warnings)


# ---------------------------------------------------------------------------------------- server_id


def auto_server_id(pipeline: str, origin: str, registry_dir: str | os.PathLike[str] = SERVER_ID_DIR) -> int:
    """A server_id for `pipeline` reading `origin` (host:port): a hash of both into a high range; the
    per-host registry `~/.dbus/server_ids/<id>` (file content: who owns it) moves a clash to the next id.
    The same pipeline gets the same id again."""
    owner = f"{pipeline}@{origin}\n"
    base = zlib.crc32(owner.encode())
    directory = Path(os.path.expanduser(registry_dir))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return AUTO_ID_BASE + base % AUTO_ID_SPAN
    for step in range(1000):
        sid = AUTO_ID_BASE + (base + step) % AUTO_ID_SPAN
        path = directory / str(sid)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                if path.read_text() == owner:
                    return sid
            except OSError:
                pass
            continue
        except OSError:
            return sid
        with os.fdopen(fd, "w") as f:
            f.write(owner)
        return sid
    return AUTO_ID_BASE + base % AUTO_ID_SPAN


def replica_identity(pipeline: str) -> str:
    """The host a reader reports when it registers as a replica (`SHOW SLAVE HOSTS` shows it)."""
    import socket

    return f"dbus {pipeline}@{socket.gethostname()}"[:60]


def registered_replicas(conn: pymysql.connections.Connection, server_id: int) -> list[tuple[str, int]] | None:
    """(host, port) of the replicas registered on the server with `server_id` (SHOW SLAVE HOSTS); None when
    this user may not look (MariaDB wants REPLICATION MASTER ADMIN for it)."""
    with conn.cursor() as cur:
        for sql in ("SHOW SLAVE HOSTS", "SHOW REPLICAS"):
            try:
                cur.execute(sql)
                break
            except pymysql.err.ProgrammingError as exc:
                if exc.args[0] != ER_PARSE or sql == "SHOW REPLICAS":
                    return None
            except (pymysql.err.OperationalError, pymysql.err.InternalError):
                return None
        names = [str(d[0]).lower() for d in cur.description or ()]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    return [(str(r.get("host") or ""), int(r.get("port") or 0)) for r in rows
            if int(r.get("server_id", -1)) == server_id]


def is_server_id_clash(exc: BaseException) -> bool:
    """The server ended the binlog connection because another replica connected with the same server_id."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = str(exc.args[1]) if len(exc.args) > 1 else ""
    return code == ER_SLAVE_SAME_ID or (code == ER_MASTER_FATAL_READING_BINLOG and "same server_uuid/server_id" in text)


def server_id_clash(ep: Endpoint, server_id: int, others: list[tuple[str, int]] | None, took_over: bool) -> DbusError:
    """The one-line error of a server_id another replica of the server uses."""
    known = ", ".join(f"{h or '?'}:{p}" for h, p in others or [])
    who = f"another replica of {ep.where}" + (f" ({known} in SHOW SLAVE HOSTS)" if known else "")
    what = f"is used by {who}, which took over the binlog connection" if took_over else f"is already used by {who}"
    return DbusError(
        f"server_id {server_id} {what}: give each pipeline and replica its own source.server_id, "
        "or use server_id: auto"
    )


def server_id_taken_over(ep: Endpoint, server_id: int) -> DbusError:
    """`server_id_clash` when the server ended our binlog connection for another replica with `server_id`,
    naming the replicas it lists (when this user may look)."""
    others: list[tuple[str, int]] | None = None
    try:
        conn = connect(ep)
        try:
            others = registered_replicas(conn, server_id)
        finally:
            conn.close()
    except DbusError:
        pass
    return server_id_clash(ep, server_id, others, took_over=True)
