"""Whose binlog a checkpoint's position is in, checked at open before the stream starts.

A checkpoint (`dbus_ray.mysql.offset`) records the server identity (`server`) and, on MariaDB, the GTID
state at its offset (`gtid_pos`). At open (`resume_point`):

- same server, and `BINLOG_GTID_POS(file, offset)` is the checkpoint's state: resume at `file:offset`;
- another server (a promoted replica, a switchover) whose GTID history holds the checkpoint's state:
  resume by GTID (MariaDB `@slave_connect_state`, strict mode) right after the checkpoint's transactions,
  said in one log line; the checkpoints then hold the new server's file:offset;
- the same server whose binlog at the offset is not the checkpoint's (`RESET MASTER`, a re-initialized
  server, or another server with the same server_id), another server without the checkpoint's history,
  or no GTID state to resume from: a one-line DbusError naming what changed and what to do.

Checkpoints without `server`/`gtid_pos` (older ones, `dbus checkpoint set`) resume at `file:offset` when it
is an event boundary of the file (MariaDB), as before. MySQL (`gtid_pos` is the executed GTID set at the
offset, `dbus_ray.mysql.gtid_set`): on the same server (`server_uuid`) it resumes at `file:offset`; on
another one with gtid_mode=ON whose `gtid_executed` holds the checkpoint's set, by auto-position
(COM_BINLOG_DUMP_GTID with that set), said in one log line; else a one-line DbusError.
"""

from __future__ import annotations

import logging

import pymysql

from dbus_ray.errors import DbusError
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql.gtid_set import GtidSet
from dbus_ray.mysql.offset import BinlogOffset

log = logging.getLogger("dbus.mysql")

FIX = ("set a position on this server with `dbus checkpoint set PIPELINE FILE:OFFSET`, or remove the "
       "pipeline's checkpoint and snapshot (snapshot: initial)")


def parse_state(text: str | None) -> dict[str, str]:
    """A MariaDB GTID state (`0-1-202,1-5-7`, as gtid_binlog_pos) -> {domain: gtid}; ValueError naming it."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        bits = part.split("-")
        if len(bits) != 3 or not all(b.isdigit() for b in bits):
            raise ValueError(f"bad MariaDB GTID {part!r} in {text!r}: expected DOMAIN-SERVER-SEQ, e.g. 0-1-202")
        out[bits[0]] = part
    return out


def format_state(state: dict[str, str]) -> str:
    return ",".join(state[d] for d in sorted(state, key=int))


def same_state(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and parse_state(a) == parse_state(b)


def missing_from(history: str | None, state: str) -> list[str]:
    """The GTIDs of `state` that the server's `history` (its gtid_binlog_pos) does not reach: its domain is
    absent there or behind (the server's strict mode checks the exact GTID when the stream connects)."""
    have = parse_state(history)
    out = []
    for domain, gtid in parse_state(state).items():
        there = have.get(domain)
        if there is None or int(there.rsplit("-", 1)[1]) < int(gtid.rsplit("-", 1)[1]):
            out.append(gtid)
    return out


def _scalar(conn: pymysql.connections.Connection, sql: str, args: object = None) -> object:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return row[0] if row else None


def state_at(conn: pymysql.connections.Connection, file: str, offset: int) -> str | None:
    """MariaDB's GTID state at `file:offset` (BINLOG_GTID_POS); None when that is not an event boundary of
    a file the server has."""
    value = _scalar(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, offset))
    return None if value is None else str(value)


def resume_point(ep: cn.Endpoint, info: cn.ServerInfo, cp: BinlogOffset, logs: list[tuple[str, int]],
                 pipeline: str) -> tuple[BinlogOffset, str | None]:
    """Where a checkpoint resumes on the server `info` describes: (start, None) at `start.file:offset`, or
    (start, GTID state) by GTID; `start` carries the GTID state and server identity it resumes with.
    Raises a one-line DbusError when neither is right (see the module docstring)."""
    where, server = ep.where, info.server
    same = cp.server is None or cp.server == server
    here = f"{where} (server {server})"
    if not info.mariadb:
        return _mysql_resume_point(info, cp, here, pipeline)
    sizes = dict(logs)
    if cp.file == "" and cp.gtid_pos is not None:  # started from a GTID set, no transaction read yet
        return cp, cp.gtid_pos
    conn = cn.connect(ep)
    try:
        at = state_at(conn, cp.file, cp.offset) if cp.file in sizes else None
        history = str(_scalar(conn, "SELECT @@GLOBAL.gtid_binlog_pos") or "")
    finally:
        conn.close()
    if same and cp.file not in sizes:  # purged, or a reset: the caller says which (or snapshots)
        if cp.gtid_pos is not None and missing_from(history, cp.gtid_pos):
            raise DbusError(
                f"the binlog of {here} was reset: binlog file {cp.file} of the checkpoint is gone and its "
                f"GTID history {history or '(empty)'} does not hold the checkpoint's {cp.gtid_pos}; {FIX}"
            )
        return cp.with_(server=server), None
    if same:
        if at is not None and (cp.gtid_pos is None or same_state(at, cp.gtid_pos)):
            log.info("[%s] resuming at %s:%s on %s: the binlog there is the checkpoint's (GTID state %s)",
                     pipeline, cp.file, cp.offset, here, at or "(empty)")
            return cp.with_(gtid_pos=at, server=server), None
        what = (f"{cp.file}:{cp.offset} is not an event boundary there" if at is None
                else f"the GTID state at {cp.file}:{cp.offset} is {at or '(empty)'}, the checkpoint's is {cp.gtid_pos}")
        raise DbusError(
            f"the binlog of {here} is not the one the checkpoint was taken on ({what}): RESET MASTER, a "
            f"re-initialized server, or another server with the same server_id; {FIX}"
        )
    if cp.gtid_pos is None:
        raise DbusError(
            f"the checkpoint's position {cp.file}:{cp.offset} is in the binlog of server {cp.server}, not of "
            f"{here}, and the checkpoint holds no GTID state to resume from; {FIX}"
        )
    gone = missing_from(history, cp.gtid_pos)
    if gone:
        raise DbusError(
            f"{here} is not the server the checkpoint was taken on (server {cp.server}) and its GTID history "
            f"{history or '(empty)'} does not hold the checkpoint's {', '.join(gone)}: an unrelated server or a "
            f"reset binlog; {FIX}"
        )
    _no_prepared_xa(cp, here)
    log.warning("[%s] %s is not the server the checkpoint's position %s:%s is from (server %s): resuming by GTID "
                "after %s%s", pipeline, here, cp.file, cp.offset, cp.server, cp.gtid_pos or "(empty)",
                f", skipping the first {cp.skip} rows of {cp.gtid}" if cp.skip else "")
    return cp, cp.gtid_pos


def _no_prepared_xa(cp: BinlogOffset, here: str) -> None:
    if cp.xa:
        raise DbusError(
            f"{here} is not the server the checkpoint was taken on (server {cp.server}) and the checkpoint holds "
            f"prepared XA transactions ({', '.join(cp.xa)}) whose rows are read again from that server's binlog "
            f"positions: resuming them by GTID is not supported; resolve them there first, or {FIX}"
        )


def _mysql_resume_point(info: cn.ServerInfo, cp: BinlogOffset, here: str,
                        pipeline: str) -> tuple[BinlogOffset, str | None]:
    """`resume_point` on MySQL: same server at `file:offset`, another one by auto-position (module docstring)."""
    if cp.file == "" and cp.gtid_pos is not None:  # started from a GTID set, no transaction read yet
        return cp, cp.gtid_pos
    if cp.server is None or cp.server == info.server:
        _mysql_not_reset(info, cp, here)
        return cp.with_(server=info.server), None
    if cp.gtid_pos is None or not info.gtid_mode_on:
        why = ("the checkpoint holds no executed GTID set to resume from" if cp.gtid_pos is None
               else f"gtid_mode is {info.variables.get('gtid_mode') or 'unknown'} there, not ON")
        raise DbusError(f"the checkpoint's position {cp.file}:{cp.offset} is in the binlog of server {cp.server}, "
                        f"not of {here}, and {why}; {FIX}")
    wanted, history, gone = _mysql_sets(cp.gtid_pos, info, f"cannot resume by GTID on {here}")
    if gone.sids:
        raise DbusError(
            f"{here} is not the server the checkpoint was taken on (server {cp.server}) and its gtid_executed "
            f"{str(history) or '(empty)'} does not hold the checkpoint's {gone}: an unrelated server or a reset "
            f"binlog; {FIX}"
        )
    _no_prepared_xa(cp, here)
    log.warning("[%s] %s is not the server the checkpoint's position %s:%s is from (server %s): resuming by GTID "
                "(auto-position) after %s%s", pipeline, here, cp.file, cp.offset, cp.server, str(wanted) or "(empty)",
                f", skipping the first {cp.skip} rows of {cp.gtid}" if cp.skip else "")
    return cp.with_(gtid_pos=str(wanted)), str(wanted)


def _mysql_sets(checkpoint_set: str, info: cn.ServerInfo, what: str) -> tuple[GtidSet, GtidSet, GtidSet]:
    """(the checkpoint's executed GTID set, the server's gtid_executed, the part of the first the second lacks);
    DbusError `what: <reason>` when either is not a GTID set."""
    try:
        wanted, history = GtidSet.parse(checkpoint_set), GtidSet.parse(info.gtid)
    except ValueError as exc:
        raise DbusError(f"{what}: {exc}") from None
    return wanted, history, wanted.missing_from(history)


def _mysql_not_reset(info: cn.ServerInfo, cp: BinlogOffset, here: str) -> None:
    """On the MySQL server the checkpoint was taken on (gtid_mode=ON), its gtid_executed still holds the
    checkpoint's executed set; else the binlog was reset since (RESET MASTER / RESET BINARY LOGS AND GTIDS)
    and the checkpoint's file:offset may fall anywhere in the new one: one line, never a silent re-position."""
    if cp.gtid_pos is None or not info.gtid_mode_on:
        return
    _, history, gone = _mysql_sets(cp.gtid_pos, info, f"cannot check the binlog history of {here}")
    if gone.sids:
        raise DbusError(
            f"the binlog of {here} is not the one the checkpoint was taken on: its gtid_executed "
            f"{str(history) or '(empty)'} no longer holds the checkpoint's {gone} (RESET MASTER, or a re-initialized "
            f"server with the same server_uuid); {FIX}"
        )


def binlog_refusal(text: str, where: str, server: str | None, file: str, pos: int, by_gtid: BinlogOffset | None,
                   state: str | None) -> DbusError:
    """The one-line error of a server that refused the binlog dump (its message `text`): connected by the
    GTID `state` (that of the checkpoint or start `by_gtid`), or at `file:pos`."""
    if by_gtid is not None:
        taken = f" (the checkpoint's state, taken on server {by_gtid.server})" if by_gtid.server else ""
        return DbusError(
            f"{where} (server {server}) cannot resume by GTID after {state or '(empty)'}{taken}: "
            f"{text.split('. ')[0]}; its history does not hold those transactions: {FIX}"
        )
    if "find first log" in text or "purged" in text.lower():
        return DbusError(
            f"binlog file {file} is no longer on {where} (purged?): restart from `start: earliest` or a snapshot "
            "after removing the pipeline's checkpoint"
        )
    hint = ""
    if "max_allowed_packet" in text or "bogus data" in text:
        hint = (" (that position is not an event boundary: the binlog was reset, or the position is another "
                f"server's; {FIX})")
    return DbusError(f"the server {where} refused to send the binlog at {file}:{pos}: {text}{hint}")
