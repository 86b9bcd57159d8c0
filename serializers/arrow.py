"""Serializer `arrow`: a whole run of rows (`TableRows`) as one Arrow record batch or Arrow IPC stream (the
kafka sink's `format: arrow`). The table's identity travels in the schema metadata
(`dbus.db`, `dbus.table`, `dbus.key` as JSON, `dbus.pipeline`), so `from_ipc` rebuilds the `TableRows`.
Values are the source's, untouched (unsigned, decimal and temporal types keep their Arrow types)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pyarrow as pa

from dbus_ray.model import TableRows


def to_record_batch(rows: TableRows, pipeline: str = "") -> pa.RecordBatch:
    """The run's record batch with the table's identity in its schema metadata."""
    meta = dict(rows.data.schema.metadata or {})
    meta.update({
        b"dbus.db": rows.db.encode(),
        b"dbus.table": rows.table.encode(),
        b"dbus.key": json.dumps(list(rows.key)).encode(),
        b"dbus.pipeline": pipeline.encode(),
    })
    return rows.data.replace_schema_metadata(meta)


def to_ipc(rows: TableRows, pipeline: str = "") -> bytes:
    """The run as an Arrow IPC stream (one record batch)."""
    batch = to_record_batch(rows, pipeline)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_record_batch(batch: pa.RecordBatch) -> TableRows:
    meta = batch.schema.metadata or {}
    try:
        db, table = meta[b"dbus.db"].decode(), meta[b"dbus.table"].decode()
        key = tuple(json.loads(meta[b"dbus.key"]))
    except KeyError as exc:
        raise ValueError(f"record batch has no dbus metadata ({exc.args[0].decode()})") from None
    return TableRows(db, table, key, batch)


def from_ipc(data: bytes) -> list[TableRows]:
    """Every run (record batch) in one IPC stream written by `to_ipc`."""
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    return [from_record_batch(batch) for batch in reader]


class ArrowSerializer:
    name: ClassVar[str] = "arrow"
    per_row: ClassVar[bool] = False
    content_type: ClassVar[str] = "application/vnd.apache.arrow.stream"

    def encode(self, rows: TableRows, pipeline: str, records: list[dict[str, Any]] | None = None) -> list[bytes]:
        return [to_ipc(rows, pipeline)]

    @staticmethod
    def decode(value: bytes) -> list[TableRows]:
        return from_ipc(value)
