"""A table's key in the order the server sorts it, in Python. A parallel snapshot reads key ranges whose
bounds come from the server's `ORDER BY` of the key, and its fences judge each stream row by the range its
key falls in (`dbus_ray.mysql.snapshot.parallel.Fences`): that comparison must agree with the server's,
or a change is dropped as held by a read that never saw it. Each key column has a kind (JSON, kept with
the fences in the checkpoint):

- `"int"`: TINYINT..BIGINT, YEAR: as they are.
- `"decimal"`: DECIMAL: by value.
- `"temporal"`: DATE, DATETIME: the text at one width (`YYYY-MM-DD HH:MM:SS.ffffff`), which sorts as the
  server does, zero dates included (the decoder gives `...T...` without a fraction when it is zero, the
  bounds come as Python dates).
- `"time"`: TIME: signed microseconds.
- `"bytes"`: VARBINARY: byte by byte (no padding, as the server compares them).
- `["text", charset, collation, chars]`: CHAR, VARCHAR: the server's own `WEIGHT_STRING` of the value in
  the column's collation, padded to the column's length unless the collation is NO PAD (so trailing
  spaces and characters below the space sort as the server sorts them), asked for in batches and kept.

A key with a column of another type (FLOAT/DOUBLE, BINARY(n), BIT, ENUM, SET, TIMESTAMP, TEXT/BLOB) or
a key prefix has no kinds: the parallel snapshot reads that table as one chunk.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Any

from dbus_ray.errors import DbusError

_INT = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"}
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
BATCH = 200  # values per WEIGHT_STRING query
CACHE = 200_000  # weights kept (cleared when full)


def key_kinds(columns: dict[str, dict[str, Any]], page: tuple[str, ...], prefixed: bool) -> list[Any] | None:
    """The kind of each key column (`columns`: information_schema.COLUMNS rows by name), or None when the
    key cannot be ordered here (see the module docstring)."""
    if prefixed:
        return None
    kinds: list[Any] = []
    for name in page:
        c = columns[name]
        data_type = str(c["DATA_TYPE"]).lower()
        if data_type in _INT:
            kinds.append("int")
        elif data_type == "decimal":
            kinds.append("decimal")
        elif data_type in ("date", "datetime"):
            kinds.append("temporal")
        elif data_type == "time":
            kinds.append("time")
        elif data_type == "varbinary":
            kinds.append("bytes")
        elif data_type in ("char", "varchar") and c.get("COLLATION_NAME") and c.get("CHARACTER_MAXIMUM_LENGTH"):
            charset, collation = str(c["CHARACTER_SET_NAME"]), str(c["COLLATION_NAME"])
            if not (_NAME.match(charset) and _NAME.match(collation)):
                return None
            kinds.append(["text", charset, collation, int(c["CHARACTER_MAXIMUM_LENGTH"])])
        else:
            return None
    return kinds


def _temporal(v: Any) -> str:
    if isinstance(v, dt.datetime):
        return f"{v:%Y-%m-%d %H:%M:%S}.{v.microsecond:06d}"
    if isinstance(v, dt.date):
        return v.isoformat()
    text = str(v).replace("T", " ")
    if text.endswith("Z"):
        text = text[:-1]
    if " " not in text:
        return text
    day, clock = text.split(" ", 1)
    whole, _, frac = clock.partition(".")
    return f"{day} {whole}.{frac:0<6}"


def _time(v: Any) -> int:
    if isinstance(v, dt.timedelta):
        return v // dt.timedelta(microseconds=1)
    text = str(v)
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    h, m, s = (int(p) for p in whole.split(":"))
    return sign * (((h * 60 + m) * 60 + s) * 1_000_000 + int(f"{frac:0<6}"[:6]))


_PLAIN = {"int": int, "decimal": lambda v: decimal.Decimal(str(v)), "temporal": _temporal, "time": _time,
          "bytes": bytes}


class Weigher:
    """`WEIGHT_STRING` of text values in a collation, from the server (`connect()` gives a connection)."""

    def __init__(self, connect: Any) -> None:
        self.connect = connect
        self.conn: Any = None
        self.cache: dict[tuple[str, str, int, str], bytes] = {}

    def weights(self, spec: list[Any], values: list[str]) -> list[bytes]:
        _, charset, collation, chars = spec
        pad = "" if "nopad" in collation.lower() else f" AS CHAR({int(chars)})"
        todo = sorted({v for v in values if (charset, collation, chars, v) not in self.cache})
        for i in range(0, len(todo), BATCH):
            part = todo[i : i + BATCH]
            expr = f"WEIGHT_STRING(CONVERT(%s USING {charset}) COLLATE {collation}{pad})"
            row = self._query(f"SELECT {', '.join([expr] * len(part))}", part)
            if len(self.cache) + len(part) > CACHE:
                self.cache.clear()
            for v, w in zip(part, row):
                if w is None:
                    raise DbusError(f"the server gives no weight for a key value in collation {collation}")
                self.cache[(charset, collation, chars, v)] = bytes(w)
        return [self.cache[(charset, collation, chars, v)] for v in values]

    def _query(self, sql: str, args: list[str]) -> tuple[Any, ...]:
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = self.connect()
                with self.conn.cursor() as cur:
                    cur.execute(sql, args)
                    return tuple(cur.fetchone())
            except Exception:  # a dropped connection: once more on a new one
                self.close()
                if attempt:
                    raise
        raise AssertionError("not reached")

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self.conn = None


class KeyOrder:
    """Sort keys of key tuples of one table: tuples that compare as the server orders the keys. `kinds`
    None: the keys are compared as they are (integer keys, and fences saved before kinds were kept)."""

    def __init__(self, kinds: list[Any] | None, weigher: Weigher | None) -> None:
        self.kinds = kinds
        self.weigher = weigher
        if kinds and any(isinstance(k, list) for k in kinds) and weigher is None:
            raise ValueError("a text key needs a Weigher")

    def sort_keys(self, keys: list[tuple[Any, ...] | None]) -> list[tuple[Any, ...] | None]:
        """Each key's sort key; None for a key that is None or holds a NULL (no range holds it)."""
        if not self.kinds:
            return [None if k is None or None in k else k for k in keys]
        whole = [k for k in keys if k is not None and None not in k]
        columns: list[list[Any]] = []
        for j, kind in enumerate(self.kinds):
            values = [k[j] for k in whole]
            if isinstance(kind, list):
                assert self.weigher is not None
                columns.append(self.weigher.weights(kind, [str(v) for v in values]))
            else:
                columns.append([_PLAIN[kind](v) for v in values])
        done = iter(zip(*columns))
        return [None if k is None or None in k else next(done) for k in keys]
