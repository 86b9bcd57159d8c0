"""The row images of one rows event: its before and after columns as the table's layout decodes them, from
a plain, a MariaDB compressed (`log_bin_compress=ON`) or a MySQL partial JSON update
(`binlog_row_value_options=PARTIAL_JSON`) event, and the columns its images leave out."""

from __future__ import annotations

from typing import Any

from dbus_ray.errors import DecodeError
from dbus_ray.mysql import events as et
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.decoder import DECODE_ERRORS
from dbus_ray.mysql.partial import read_partial_rows

#: the table id of MySQL's dummy rows event (no rows, no table map: it ends a statement on tables not logged)
DUMMY_TABLE_ID = 2**48 - 1
DUMMY_ENTRY = ("", "", None)


def unmapped(table_id: int, file: str, offset: int) -> tuple[str, str, None]:
    """The table entry of a rows event whose table id no TABLE_MAP event mapped: MySQL's dummy event's (no
    table, nothing to decode), else a DecodeError: the stream started inside a transaction, after its table map."""
    if table_id == DUMMY_TABLE_ID:
        return DUMMY_ENTRY
    raise DecodeError(f"binlog {file}:{offset}: a rows event of table id {table_id} without the TABLE_MAP event "
                      "before it (a start position inside a transaction?); start at a transaction's first event")


def row_images(ev: rp.RawEvent, layout: Any, file: str, offset: int, bitmap: Any, bitmap2: Any,
               pos: int) -> tuple[str, Any, Any, int, dict[str, list[str]] | None]:
    """(op, before columns, after columns, rows, absent) of the rows event `ev` at `file:offset` whose body
    starts at `pos`; `absent` names the columns an image leaves out (binlog_row_image MINIMAL or NOBLOB:
    absent, not null), None when both images are full."""
    t = ev.type
    hit = layout.plain.get((t, bitmap, bitmap2))
    if hit is not None:  # a plain rows event with these columns seen before (the usual case): its decoder
        decode, op, absent, one = hit
        end = ev.end
        try:
            got = one(ev.data, pos, end) if one is not None and pos < end else None
            if got is None:
                if one is not None and pos < end:  # more than one row: this table's events are not one-row ones
                    hit[3] = None
                got = decode(ev.data, pos, end)
            stop, first, second = got
        except DECODE_ERRORS as exc:
            raise DecodeError(f"binlog {file}:{offset}: {layout.corrupt(op, exc)}") from None
        if stop != end:
            raise DecodeError(f"binlog {file}:{offset}: {layout.truncated(op, stop, end)}")
        if op == "insert":
            return op, None, first, len(first[0]), absent
        if op == "update":
            return op, first, second, len(first[0]), absent
        return op, first, None, len(first[0]), absent
    op = et.ROWS_OP[t]
    data, end = ev.data, ev.end
    try:
        if ev.type in et.ROWS_COMPRESSED:  # log_bin_compress=ON: the row images are one compressed record
            try:
                data = rp.uncompress(data[pos:end])
            except ValueError as exc:
                raise DecodeError(f"{op} rows event of {layout.db}.{layout.table}: {exc}") from None
            pos, end = 0, len(data)
        if ev.type == et.PARTIAL_UPDATE_ROWS:  # binlog_row_value_options=PARTIAL_JSON: JSON after values are diffs
            before, after = read_partial_rows(layout, data, bitmap, bitmap2, pos, end)
        else:
            before, after = layout.read_rows(data, op, bitmap, bitmap2, pos, end)
    except DecodeError as exc:
        raise DecodeError(f"binlog {file}:{offset}: {exc}") from None
    n = len((after if after is not None else before)[0])
    absent: dict[str, list[str]] | None = None
    gone = layout.absent(bitmap)
    gone2 = layout.absent(bitmap2) if bitmap2 is not None else ()
    if gone or gone2:
        absent = {}
        if gone:
            absent["after" if op == "insert" else "before"] = list(gone)
        if gone2:
            absent["after"] = list(gone2)
    if t not in et.ROWS_COMPRESSED and t != et.PARTIAL_UPDATE_ROWS:
        one = layout.one_row_decoder(bitmap) if op != "update" else None
        layout.plain[(t, bitmap, bitmap2)] = [layout.decoder(op, bitmap, bitmap2), op, absent, one]
    return op, before, after, n, absent
