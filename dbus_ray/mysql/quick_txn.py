"""The read loop's short way through the commonest MariaDB transaction, a busy primary's autocommit
statement: its GTID event, the TABLE_MAP of a table mapped before, one rows event of an included table and
the XID, all four framed already (`Replica.ahead`). One call handles them with the effects the four events
have one by one in `BinlogStream._event`: one pending segment (the transaction's rows, index 0 on), the
position after the XID, the GTID state and the event time. Any other shape goes the long way, event by
event: a DDL or an XA group (the GTID's flags), a table map not seen before, an excluded table, two rows
events, a COMMIT query instead of an XID, events without positions (`log_pos` 0), a resume's rows to
skip, XA groups read again, and with decoder actors (`defer`) a rows event of more than INLINE_ROWS_BYTES
of row images (a decoder's: `dbus_ray.mysql.decode_pool`). A rows event it cannot decode raises the same
DecodeError as the long way before anything changes (the checkpoint stays before the transaction)."""

from __future__ import annotations

from collections import deque
from typing import Any

from dbus_ray.mysql import events as et
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql import xa
from dbus_ray.mysql.batches import Segment
from dbus_ray.mysql.decode_pool import INLINE_ROWS_BYTES
from dbus_ray.mysql.row_images import row_images

#: a GTID event that starts a standalone statement (a DDL), an XA group or its completion: the long way
LONG_WAY_FLAGS = 0x01 | xa.FL_PREPARED_XA | xa.FL_COMPLETED_XA


class QuickTxns:
    """A mixin of `BinlogStream` (its attributes are the stream's)."""

    pending: list[Segment]
    pending_rows: int

    def _quick_txn(self: Any, gtid_ev: rp.RawEvent, ahead: deque[rp.RawEvent]) -> bool:
        """Handle the transaction that MariaDB GTID event `gtid_ev` starts with the next three events of
        `ahead` when it has the commonest shape; False (nothing done, nothing taken) otherwise."""
        if len(ahead) < 3 or self.txn is not None or self.resume is not None or self.recollect is not None \
                or self._skip_gtid is not None:
            return False
        tmap, rows, xid = ahead[0], ahead[1], ahead[2]
        if xid.type != et.XID_EVENT or tmap.type != et.TABLE_MAP_EVENT or rows.type not in et.ROWS_OP \
                or not (gtid_ev.log_pos and rows.log_pos and xid.log_pos):
            return False
        gtid, flags = rp.mariadb_gtid(gtid_ev)
        if flags & LONG_WAY_FLAGS or not self.schema.mapped(tmap):
            return False
        table_id, _flags, _ncols, bitmap, bitmap2, pos = rp.rows_body(rows)
        entry = self.schema.by_table_id.get(table_id)
        if entry is None or entry[2] is None:  # an excluded table
            return False
        if self.defer and rows.end - pos > INLINE_ROWS_BYTES:  # a decoder's
            return False
        layout, file = entry[2], self.file
        offset = rows.log_pos - rows.event_size
        op, before, after, n, absent = row_images(rows, layout, file, offset, bitmap, bitmap2, pos)
        ahead.popleft()
        ahead.popleft()
        ahead.popleft()
        self._file_start = False
        self.pending.append(Segment(layout, op, before, after, n, file, offset, gtid, 0, gtid, float(rows.timestamp),
                                    file, gtid_ev.log_pos - gtid_ev.event_size, absent, self._state(),
                                    self.prepared.marks))
        self.pending_rows += n
        self._committed(gtid)
        ts = xid.timestamp or rows.timestamp or gtid_ev.timestamp
        if ts:
            self.last_ts = float(ts)
        end = self.next_pos = xid.log_pos
        if not self.reached:
            self._check_reached(end)
        return True
