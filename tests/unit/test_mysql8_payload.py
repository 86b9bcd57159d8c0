"""MySQL 8 compressed transactions (TRANSACTION_PAYLOAD_EVENT, zstd, binlog_transaction_compression=ON) read by
our `BinlogStream` from a binlog file written by the test writer (`tests.support.mysql8_binlog`, MySQL's
documented layout): the rows inside payloads equal the rows written and stock python-mysql-replication's parse
of the same inner events, value by value; and a resume from any checkpoint, including one inside a payload,
neither loses nor repeats a row."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dbus_ray.errors import DecodeError
from dbus_ray.mysql import events as et
from dbus_ray.mysql.offset import BinlogOffset
from tests.support import mysql8_binlog as w
from tests.support.mysql8_stream import SERVER_UUID, open_stream, read_all, stock_events
from tests.unit.test_mysql8_json import agree

COLS = [w.col_long("id"), w.col_varchar("name", 160), w.col_json("doc"), w.col_enum("kind", ("small", "large"))]
TABLE_ID = 91


def table_map() -> bytes:
    return w.table_map_body(TABLE_ID, "shop", "items", COLS, primary_key=(0,))


def image(row: tuple[Any, ...]) -> bytes:
    i, name, doc, kind = row
    return w.row_image(COLS, [i, name, None if doc is None else w.json_binary(doc), kind])


def write(rows: list[tuple[Any, ...]]) -> bytes:
    return w.rows_body(TABLE_ID, len(COLS), b"".join(image(r) for r in rows))


def update(pairs: list[tuple[tuple[Any, ...], tuple[Any, ...]]]) -> bytes:
    return w.rows_body(TABLE_ID, len(COLS), b"".join(image(a) + image(b) for a, b in pairs), bitmap2=True)


R1 = (1, "één", {"b": [1, 2.5], "a": None}, "small")
R2 = (2, "two", ["x", True, 3], "large")
R3 = (3, "three", None, "small")
R2B = (2, "two!", {"k": "v"}, "large")
R4 = (4, "four", 1e300, "large")
R5 = (5, "five", "s", "small")
R6 = (6, "six", {"n": -7}, "small")

#: (op, before, after) in binlog order, as the writer writes them (text of JSON as MySQL shows it)
EXPECTED = [
    ("insert", None, R1), ("insert", None, R2), ("insert", None, R3),
    ("update", R2, R2B), ("delete", R1, None),
    ("insert", None, R4),
    ("insert", None, R5), ("insert", None, R6), ("delete", R3, None),
]
JSON_TEXT = {(1, "één"): '{"a": null, "b": [1, 2.5]}', (2, "two"): '["x", true, 3]', (3, "three"): None,
             (2, "two!"): '{"k": "v"}', (4, "four"): "1e300", (5, "five"): '"s"', (6, "six"): '{"n": -7}'}


def build() -> tuple[bytes, list[int], list[int]]:
    """A binlog with a compressed GTID transaction (5 rows), an uncompressed one (1 row) and a compressed
    anonymous one (3 rows); returns the file, the positions of the three transactions' first events and those of
    the two payload events."""
    f = w.BinlogFile()
    starts = [f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 1))]
    payloads = [f.add_payload([(w.QUERY_EVENT, w.query_body("BEGIN")), (w.TABLE_MAP_EVENT, table_map()),
                   (w.WRITE_ROWS, write([R1, R2, R3])), (w.UPDATE_ROWS, update([(R2, R2B)])),
                   (w.DELETE_ROWS, write([R1])), (w.XID_EVENT, w.xid_body(11))])]
    starts.append(f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 2, last_committed=1, sequence_number=2)))
    f.add(w.QUERY_EVENT, w.query_body("BEGIN"))
    f.add(w.TABLE_MAP_EVENT, table_map())
    f.add(w.WRITE_ROWS, write([R4]))
    f.add(w.XID_EVENT, w.xid_body(12))
    starts.append(f.add(w.ANONYMOUS_GTID_LOG_EVENT, w.gtid_body(None, 0, last_committed=2, sequence_number=3)))
    payloads.append(f.add_payload([(w.QUERY_EVENT, w.query_body("BEGIN")), (w.TABLE_MAP_EVENT, table_map()),
                                   (w.WRITE_ROWS, write([R5, R6])), (w.DELETE_ROWS, write([R3])),
                                   (w.XID_EVENT, w.xid_body(13))]))
    return f.bytes(), starts, payloads


def as_image(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"id": row[0], "name": row[1], "doc": JSON_TEXT[row[:2]], "kind": row[3]}


def test_payload_event_is_decoded_not_refused() -> None:
    assert et.EVENT_TYPES[40].kind == et.DECODED


def test_rows_inside_payloads_equal_the_rows_written(monkeypatch: pytest.MonkeyPatch) -> None:
    data, starts, payloads = build()
    rows = read_all(open_stream(monkeypatch, {"binlog.000001": data}, BinlogOffset("binlog.000001", 4)))
    assert [(r["op"], r["before"], r["after"]) for r in rows] == [
        (op, as_image(b), as_image(a)) for op, b, a in EXPECTED]
    gtid1, gtid2 = f"{SERVER_UUID}:1", f"{SERVER_UUID}:2"
    assert [r["gtid"] for r in rows] == [gtid1] * 5 + [gtid2] + [None] * 3
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4, 0, 0, 1, 2]
    assert {r["offset"] for r in rows[:5]} == {payloads[0]}  # a row inside a payload is at the payload
    assert {r["txid"] for r in rows[6:]} == {f"binlog.000001:{payloads[1]}"}  # its BEGIN is inside the payload
    assert {r["offset"] for r in rows[6:]} == {payloads[1]}


def test_stock_parses_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock python-mysql-replication's row events over the same inner events give the same values (its JSON
    parsed; ENUM as the member)."""
    data, _, _ = build()
    ours = read_all(open_stream(monkeypatch, {"binlog.000001": data}, BinlogOffset("binlog.000001", 4)))
    stock_rows: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = []
    for ev in stock_events(data):
        kind = type(ev).__name__
        if kind in ("WriteRowsEvent", "UpdateRowsEvent", "DeleteRowsEvent"):
            for r in ev.rows:
                if kind == "WriteRowsEvent":
                    stock_rows.append(("insert", None, r["values"]))
                elif kind == "UpdateRowsEvent":
                    stock_rows.append(("update", r["before_values"], r["after_values"]))
                else:
                    stock_rows.append(("delete", r["values"], None))
    assert len(stock_rows) == len(ours) == len(EXPECTED)
    for mine, (op, before, after) in zip(ours, stock_rows):
        assert mine["op"] == op
        for image_ours, image_stock in ((mine["before"], before), (mine["after"], after)):
            assert (image_ours is None) == (image_stock is None)
            if image_ours is None:
                continue
            assert image_ours["id"] == image_stock["id"] and image_ours["name"] == image_stock["name"]
            assert image_ours["kind"] == image_stock["kind"]
            if image_ours["doc"] is None:
                assert image_stock["doc"] is None
            else:
                agree(json.loads(image_ours["doc"]), image_stock["doc"], f"row {image_ours['id']}")


def test_a_resume_from_every_checkpoint_neither_loses_nor_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows handed out one at a time; after each, a new stream from the checkpoint reads the rest: together
    exactly the rows of one uninterrupted read (checkpoints inside a payload are the transaction's start and
    the index of the next row in it)."""
    data, starts, payloads = build()
    files = {"binlog.000001": data}
    full = read_all(open_stream(monkeypatch, files, BinlogOffset("binlog.000001", 4)))
    key = [(r["op"], r["offset"], r["index"]) for r in full]
    inside = 0
    for k in range(len(full) + 1):
        stream = open_stream(monkeypatch, files, BinlogOffset("binlog.000001", 4))
        first: list[dict[str, Any]] = []
        while len(first) < k:
            got = stream.read(1)
            assert got is not None
            for part in got[0]:
                first += part.data.to_pylist()
        cp = BinlogOffset.from_dict(stream.offset().to_dict())
        if cp.skip:
            inside += 1
            assert cp.offset in (*starts[:2], payloads[1])  # a GTID event, or the BEGIN of an anonymous one
        rest = read_all(open_stream(monkeypatch, files, cp))
        assert [(r["op"], r["offset"], r["index"]) for r in first + rest] == key, k
    assert inside >= 5  # checkpoints inside the two payloads' transactions were exercised


def test_a_corrupt_payload_is_refused_naming_its_position(monkeypatch: pytest.MonkeyPatch) -> None:
    f = w.BinlogFile()
    f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 1))
    at = f.add_payload([(w.QUERY_EVENT, w.query_body("BEGIN")), (w.TABLE_MAP_EVENT, table_map()),
                        (w.WRITE_ROWS, write([R1])), (w.XID_EVENT, w.xid_body(1))])
    data = bytearray(f.bytes())
    data[at + 19 + 12] ^= 0xFF  # inside the zstd frame
    stream = open_stream(monkeypatch, {"binlog.000001": bytes(data)}, BinlogOffset("binlog.000001", 4))
    with pytest.raises(DecodeError, match=rf"^binlog binlog.000001:{at}: cannot read the transaction payload: "):
        read_all(stream)


def test_a_streamed_zstd_frame_without_content_size_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    f = w.BinlogFile()
    f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 1))
    at = f.add_payload([(w.QUERY_EVENT, w.query_body("BEGIN")), (w.TABLE_MAP_EVENT, table_map()),
                        (w.WRITE_ROWS, write([R1, R2, R3])), (w.XID_EVENT, w.xid_body(1))], streamed=True)
    import zstandard

    event = f.bytes()[at:-4]
    frame = event[event.index(b"\x28\xb5\x2f\xfd"):]
    assert zstandard.frame_content_size(frame) == -1  # the frame does not say its size
    rows = read_all(open_stream(monkeypatch, {"binlog.000001": f.bytes()}, BinlogOffset("binlog.000001", 4)))
    assert [r["after"] for r in rows] == [as_image(R1), as_image(R2), as_image(R3)]


def test_a_large_payload_is_handed_out_poll_by_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed transaction of 10 rows events x 100 rows: a poll of 150 rows stops inside the payload (rows
    pending stay within one rows event of the poll size), and the rows come out whole and in order."""
    f = w.BinlogFile()
    f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 1))
    batches = [[(b * 100 + i, f"n{b * 100 + i}", None, "small") for i in range(100)] for b in range(10)]
    at = f.add_payload([(w.QUERY_EVENT, w.query_body("BEGIN")), (w.TABLE_MAP_EVENT, table_map())]
                       + [(w.WRITE_ROWS, write(rows)) for rows in batches] + [(w.XID_EVENT, w.xid_body(1))])
    end = len(f.bytes())
    stream = open_stream(monkeypatch, {"binlog.000001": f.bytes()}, BinlogOffset("binlog.000001", 4))
    got = stream.read(150)
    assert got is not None and sum(p.num_rows for p in got[0]) == 150
    assert stream.pending_rows <= 100 and stream.next_pos == at
    rest = read_all(stream, 150)
    assert len(rest) == 850 and [r["after"]["id"] for r in rest] == list(range(150, 1000))
    assert stream.next_pos == end and stream.offset().offset == end and stream.offset().skip == 0


def test_a_binlog_without_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """binlog_checksum=NONE: events without CRC (the FORMAT_DESCRIPTION_EVENT says algorithm 0)."""
    f = w.BinlogFile(checksum=False)
    f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 1))
    f.add_payload([(w.QUERY_EVENT, w.query_body("BEGIN")), (w.TABLE_MAP_EVENT, table_map()),
                   (w.WRITE_ROWS, write([R1, R2])), (w.XID_EVENT, w.xid_body(1))])
    f.add(w.GTID_LOG_EVENT, w.gtid_body(SERVER_UUID, 2))
    f.add(w.QUERY_EVENT, w.query_body("BEGIN"))
    f.add(w.TABLE_MAP_EVENT, table_map())
    f.add(w.WRITE_ROWS, write([R4]))
    f.add(w.XID_EVENT, w.xid_body(2))
    rows = read_all(open_stream(monkeypatch, {"binlog.000001": f.bytes()}, BinlogOffset("binlog.000001", 4)))
    assert [r["after"] for r in rows] == [as_image(R1), as_image(R2), as_image(R4)]


def test_the_binlog_files_source_reads_the_written_file(tmp_path: Any) -> None:
    """The same file on disk, read end to end by the `binlog_files` source (its own file reader, no server):
    the rows written, in order, with the payload rows at the payload's offset."""
    from dbus_ray.sources.binlog_files import BinlogFilesOptions, BinlogFilesSource
    from tests.support.helpers import drain

    data, _, payloads = build()
    (tmp_path / "binlog.000001").write_bytes(data)
    src = BinlogFilesSource("mysql8-files", BinlogFilesOptions(files=str(tmp_path)))
    src.open(None)
    try:
        rows = [json.loads(c.to_json()) for b in drain(src) for c in b.changes()]
        assert src.caught_up()
    finally:
        src.close()
    assert [(r["op"], r["before"], r["after"]) for r in rows] == [
        (op, as_image(b), as_image(a)) for op, b, a in EXPECTED]
    assert {r["pos"]["offset"] for r in rows[:5]} == {payloads[0]}
