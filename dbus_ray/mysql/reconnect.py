"""The binlog stream's connection (`dbus_ray.mysql.streaming.BinlogStream`): events fetched one by one, a
dropped connection resumed from the offset of the last row handed out (never mid-transaction), with backoff,
`reconnect_attempts` times, then `BinlogLost`; and the one-line errors when reconnecting cannot help (another
replica took the server_id, the server cannot send the binlog, access denied)."""

from __future__ import annotations

import logging
import time
from typing import Any

from dbus_ray.errors import DbusError
from dbus_ray.mysql import connection as cn
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.history import binlog_refusal

log = logging.getLogger("dbus.mysql")

RECONNECT_ATTEMPTS = 8


class BinlogLost(cn.Unreachable):
    """The binlog connection was lost and `reconnect_attempts` reconnects failed (the stream's offset is still
    that of the last row handed out)."""


class Reconnecting:
    """The stream's fetching, mixed into BinlogStream (which holds the state it uses: `replica`, `offset()`,
    `_start`, the pending rows it drops on a reconnect)."""

    replica: Any
    reconnect_attempts: int
    _inner: Any

    def connect_now(self) -> None:
        """Connect and read the first event now (kept for `read`, first of the replica's `ahead`): a server that
        cannot send the binlog from the start (a GTID state not in its history) says so at open, not at the
        first poll."""
        event = self._fetch()
        if event is not None:
            self.replica.ahead.appendleft(event)  # type: ignore[union-attr]

    def _fetch(self) -> rp.RawEvent | None:
        if self._inner:  # a transaction payload's events, one at a time (a poll stops at max_rows inside one too)
            return self._inner.popleft()
        attempt = 0
        while True:
            try:
                return self.replica.fetch()  # type: ignore[union-attr]  # None: reconnects as a lost connection
            except DbusError:
                raise
            except Exception as exc:
                code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
                if cn.is_server_id_clash(exc):
                    raise self._server_id_clash() from None
                if code == cn.ER_MASTER_FATAL_READING_BINLOG:
                    raise self._binlog_error(exc) from None
                if code in (cn.ER_ACCESS_DENIED, cn.ER_DBACCESS_DENIED):
                    raise cn.connect_error(self.ep, exc) from None
                attempt += 1
                if attempt > self.reconnect_attempts:
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise BinlogLost(
                        f"lost the binlog connection to {self.where} and could not reconnect "
                        f"({self.reconnect_attempts} attempts): {why}"
                    ) from None
                cp = self.offset()
                by_gtid = self.resume_gtid if self.resume is not None else None  # before its first transaction
                self.pending = []
                self.pending_rows = 0
                self.ready, self.ready_bytes, self.ready_events = [], 0, 0
                self.close()
                delay = min(0.2 * 2**attempt, 15.0)
                log.warning("[%s] binlog connection to %s lost (%s); reconnecting in %.1fs from %s", self.pipeline,
                            self.where, type(exc).__name__, delay, cp.to_dict())
                time.sleep(delay)
                if by_gtid is None:
                    self.file, self.next_pos = cp.file, cp.offset
                self._start(cp, by_gtid)

    def _server_id_clash(self) -> DbusError:
        """Another replica connected with this reader's server_id and the server ended this connection:
        reconnecting would throw the other one out in turn, forever."""
        self.close()
        return cn.server_id_taken_over(self.ep, self.server_id)

    def _binlog_error(self, exc: BaseException) -> DbusError:
        text = str(exc.args[1] if len(exc.args) > 1 else exc).splitlines()[0]
        by_gtid = self.resume if self.resume_gtid is not None else None  # still before its first transaction
        return binlog_refusal(text, self.where, self.server, self.file, self.next_pos, by_gtid, self.resume_gtid)

