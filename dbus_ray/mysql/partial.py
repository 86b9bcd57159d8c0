"""Rows of a MySQL 8 PARTIAL_UPDATE_ROWS_EVENT (type 39, `binlog_row_value_options=PARTIAL_JSON`): an update
rows event whose after image (`sql/rpl_record.cc` pack_row, UPDATE_AI) starts with the packed value_options and,
when they have PARTIAL_JSON (1), one partial bit per JSON column of the table (present or not, LSB first); then the
null bits and values of the present columns, where a JSON column with its partial bit set holds a diff vector
(4-byte length + diffs, `dbus_ray.mysql.json_diff`) instead of its value. The full after value is the diffs
applied to the column's before value. Read row by row (not through the compiled layout code): partial updates
are rare and small.
"""

from __future__ import annotations

import struct
from typing import Any

from dbus_ray.errors import DecodeError
from dbus_ray.mysql.json_diff import apply_vector
from dbus_ray.mysql.replica import read_lenenc
from dbus_ray.mysql.values import JSON, column_reader

PARTIAL_JSON = 1


def _present(bitmap: bytes, n: int) -> list[int]:
    return [i for i in range(n) if bitmap[i >> 3] >> (i & 7) & 1]


def read_partial_rows(layout: Any, body: bytes, bitmap: bytes, bitmap2: bytes, pos: int,
                      end: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """(before, after) images, one value list per column, of the rows in `body[pos:end]`."""
    where = f"update rows event of {layout.db}.{layout.table}"
    try:
        return _read(layout, body, bitmap, bitmap2, pos, end)
    except DecodeError as exc:
        raise DecodeError(f"{where}: {exc}") from None
    except (IndexError, ValueError, TypeError, struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(f"cannot decode the {where} (truncated or corrupt): {type(exc).__name__}: {exc}") from None


def _read(layout: Any, body: bytes, bitmap: bytes, bitmap2: bytes, pos: int,
          end: int) -> tuple[list[list[Any]], list[list[Any]]]:
    cols = layout.columns
    n = len(cols)
    readers = [column_reader(c)[0] for c in cols]
    json_cols = [i for i, c in enumerate(cols) if c.type == JSON]
    first, second = _present(bitmap, n), _present(bitmap2, n)
    before: list[list[Any]] = [[] for _ in cols]
    after: list[list[Any]] = [[] for _ in cols]

    def image(present: list[int], pos: int, partial: set[int], old: dict[int, Any]) -> tuple[dict[int, Any], int]:
        nulls = body[pos : pos + (len(present) + 7) // 8]
        pos += (len(present) + 7) // 8
        values: dict[int, Any] = {}
        for k, i in enumerate(present):
            if nulls[k >> 3] >> (k & 7) & 1:
                values[i] = None
            elif i in partial:
                size = int.from_bytes(body[pos : pos + 4], "little")
                vector = body[pos + 4 : pos + 4 + size]
                if len(vector) != size:
                    raise ValueError(f"JSON diff vector of column {cols[i].name} past the end of the event")
                pos += 4 + size
                if old.get(i) is None:
                    raise DecodeError(f"partial JSON update of column {cols[i].name} without a before value to apply "
                                      "it to (binlog_row_image must be FULL)")
                values[i] = apply_vector(old[i], vector)
            else:
                values[i], pos = readers[i](body, pos)
        return values, pos

    while pos < end:
        old, pos = image(first, pos, set(), {})
        options, pos = read_lenenc(body, pos)
        partial: set[int] = set()
        if options & PARTIAL_JSON:
            bits = body[pos : pos + (len(json_cols) + 7) // 8]
            pos += (len(json_cols) + 7) // 8
            partial = {i for k, i in enumerate(json_cols) if bits[k >> 3] >> (k & 7) & 1}
        new, pos = image(second, pos, partial, old)
        for i in range(n):
            before[i].append(old.get(i))
            after[i].append(new.get(i))
    if pos != end:
        raise ValueError(f"row images end at byte {pos}, the event at {end}")
    return before, after
