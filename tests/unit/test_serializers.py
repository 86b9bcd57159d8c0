"""Serializers round trip: encode then decode gives back the source values (json, avro, arrow), for the
awkward values MySQL holds: integer extremes (signed and unsigned), 65-digit decimals, float/double,
dates/datetimes/times with microseconds, emoji, zero bytes and null."""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import fastavro
import pyarrow as pa
import pytest

from dbus_ray.model import Position, RowChange, TableRows, dumps, json_default
from dbus_ray.serializers import SERIALIZERS, get_serializer
from dbus_ray.serializers.arrow import from_ipc
from dbus_ray.serializers.avro import AvroSerializer, avro_name

STDLIB = json.JSONEncoder(default=json_default, ensure_ascii=False, separators=(",", ":"))

IMAGE = pa.struct([
    ("id", pa.int64()),
    ("i8", pa.int8()),
    ("i32", pa.int32()),
    ("u8", pa.uint8()),
    ("u32", pa.uint32()),
    ("u64", pa.uint64()),
    ("dec", pa.decimal256(65, 30)),
    ("dec_int", pa.decimal128(38, 0)),
    ("f", pa.float32()),
    ("d", pa.float64()),
    ("day", pa.date32()),
    ("at", pa.timestamp("us")),
    ("at_utc", pa.timestamp("us", tz="UTC")),
    ("tod", pa.time64("us")),
    ("span", pa.duration("us")),
    ("name", pa.string()),
    ("blob", pa.binary()),
    ("flag", pa.bool_()),
    ("tags", pa.list_(pa.string())),
    ("odd col-name", pa.int32()),
])

BIG = Decimal("9" * 35 + "." + "9" * 30)
ROW_MAX = {
    "id": 2**63 - 1, "i8": 127, "i32": 2**31 - 1, "u8": 255, "u32": 2**32 - 1, "u64": 2**64 - 1,
    "dec": BIG, "dec_int": Decimal("9" * 38), "f": 16777216.0, "d": 1.7976931348623157e308,
    "day": dt.date(9999, 12, 31), "at": dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
    "at_utc": dt.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=dt.UTC),
    "tod": dt.time(23, 59, 59, 999999), "span": dt.timedelta(hours=838, minutes=59, seconds=59),
    "name": "héllo 👋🏽 世界", "blob": b"\x00\x01\x00\xff\x00", "flag": True, "tags": ["a", "🎉", ""],
    "odd col-name": 1,
}
ROW_MIN = {
    "id": -(2**63), "i8": -128, "i32": -(2**31), "u8": 0, "u32": 0, "u64": 0,
    "dec": BIG.copy_negate(), "dec_int": Decimal("-" + "9" * 38), "f": -1.5, "d": -2.2250738585072014e-308,
    "day": dt.date(1000, 1, 1), "at": dt.datetime(1000, 1, 1, 0, 0, 0, 1),
    "at_utc": dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC),
    "tod": dt.time(0, 0, 0, 1), "span": -dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=1),
    "name": "", "blob": b"", "flag": False, "tags": [], "odd col-name": -1,
}
ROW_NULL: dict[str, Any] = {name: None for name in IMAGE.names} | {"id": 7}


def change(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, offset: int) -> RowChange:
    image = after if after is not None else before
    assert image is not None
    return RowChange("p", "shop", "orders", op, {"id": image["id"]}, before, after,
                     Position("mysql-bin.000001", offset, None if offset % 2 else "0-1-5", offset % 3),
                     f"tx{offset}", 1700000000.5, 1700000001.25)


@pytest.fixture(scope="module")
def rows() -> TableRows:
    changes = [
        change("insert", None, ROW_MAX, 4),
        change("update", ROW_MAX, ROW_MIN, 5),
        change("delete", ROW_NULL, None, 6),
        change("insert", None, ROW_NULL, 7),
    ]
    return TableRows.from_changes(changes, IMAGE)


def test_registry_names() -> None:
    assert SERIALIZERS == ("json", "avro", "arrow", "debezium")
    for name in SERIALIZERS:
        assert get_serializer(name).name == name
    with pytest.raises(ValueError, match="unknown serializer 'xml'"):
        get_serializer("xml")


def test_source_values_survive_arrow(rows: TableRows) -> None:
    """The fixture itself: Arrow keeps every value exactly (so the round trips below test the codecs)."""
    got = [c.after for c in rows.changes("p")]
    assert got[0] == ROW_MAX and got[1] == ROW_MIN and got[2] is None and got[3] == ROW_NULL


def test_json_is_exactly_the_documented_form(rows: TableRows) -> None:
    changes = list(rows.changes("p"))
    values = get_serializer("json").encode(rows, "p")
    assert len(values) == rows.num_rows
    for c, v in zip(changes, values):
        assert v == dumps(c.to_dict()).encode()
        assert json.loads(v) == json.loads(c.to_json())
    first = json.loads(values[0])
    after = first["after"]
    assert after["u64"] == 2**64 - 1 and after["id"] == 2**63 - 1  # exact ints, no float rounding
    assert Decimal(after["dec"]) == BIG  # decimals as exact strings
    assert base64.b64decode(after["blob"]) == b"\x00\x01\x00\xff\x00"
    assert after["name"] == "héllo 👋🏽 世界"
    assert dt.datetime.fromisoformat(after["at"]) == ROW_MAX["at"]
    assert dt.time.fromisoformat(after["tod"]) == ROW_MAX["tod"]
    assert after["span"] == "838:59:59"
    assert json.loads(values[1])["after"]["span"] == "-838:59:59.000001"
    assert first["before"] is None and json.loads(values[2])["after"] is None
    assert json.loads(values[3])["after"]["dec"] is None


def test_avro_round_trip(rows: TableRows) -> None:
    ser = AvroSerializer()
    changes = list(rows.changes("p"))
    values = ser.encode(rows, "p")
    assert len(values) == rows.num_rows
    for c, v in zip(changes, values):
        assert ser.decode(v, rows) == c.to_dict()
    decoded = ser.decode(values[0], rows)["after"]
    assert type(decoded["u64"]) is int and decoded["u64"] == 2**64 - 1
    assert decoded["at"].tzinfo is None and decoded["at_utc"].tzinfo is not None


def test_avro_schema_types(rows: TableRows) -> None:
    schema = AvroSerializer().schema(rows)
    assert schema["namespace"] == "dbus.shop.orders" and schema["name"] == "Change"
    before = next(f for f in schema["fields"] if f["name"] == "before")
    image = {f["name"]: f for f in before["type"][1]["fields"]}
    assert image["u64"]["type"][1] == {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 0}
    assert image["dec"]["type"][1] == {"type": "bytes", "logicalType": "decimal", "precision": 65, "scale": 30}
    assert image["at"]["type"][1] == {"type": "long", "logicalType": "timestamp-micros"}
    assert image["tod"]["type"][1] == {"type": "long", "logicalType": "time-micros"}
    assert image["blob"]["type"][1] == "bytes" and image["u32"]["type"][1] == "long"
    assert image["i32"]["type"][1] == "int" and image["f"]["type"][1] == "float"
    assert image["odd_col_name"]["dbus.column"] == "odd col-name"
    # a generic Avro reader (no dbus code) reads the values with the schema alone
    body = AvroSerializer().encode(rows, "p")[0]
    import io

    plain = fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema), None)
    assert plain["after"]["u64"] == Decimal(2**64 - 1) and plain["after"]["odd_col_name"] == 1


def test_avro_names() -> None:
    assert avro_name("ok_1") == "ok_1"
    assert avro_name("1st") == "_1st"
    assert avro_name("a-b c") == "a_b_c"
    assert avro_name("") == "_"


def test_avro_schema_per_table_type(rows: TableRows) -> None:
    ser = AvroSerializer()
    other = TableRows.from_changes([change("insert", None, {"id": 1}, 1)], pa.struct([("id", pa.int64())]))
    assert ser.schema(rows) is ser.schema(rows)
    assert ser.schema(other) != ser.schema(rows)
    assert ser.decode(ser.encode(other, "p")[0], other)["after"] == {"id": 1}


RECORDED = json.loads((Path(__file__).parent / "data" / "apicurio_register.json").read_text())["exchanges"]


class _Replay(BaseHTTPRequestHandler):
    """Plays a real registry's side of the recorded exchanges, in order; a request unlike the recorded one is
    noted in `mismatches` and answered 500."""

    exchanges: ClassVar[list[dict[str, Any]]] = []
    mismatches: ClassVar[list[str]] = []
    served: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen = {"method": "POST", "path": self.path, "content_type": self.headers["Content-Type"], "body": body}
        expected = self.exchanges.pop(0) if self.exchanges else None
        if expected is None or seen != expected["request"]:
            type(self).mismatches.append(f"got {seen}, recorded {expected and expected['request']}")
            answer = {"status": 500, "content_type": "application/json", "body": "{}"}
        else:
            answer = expected["response"]
        type(self).served += 1
        payload = answer["body"].encode()
        self.send_response(answer["status"])
        self.send_header("Content-Type", answer["content_type"])
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def replay() -> Iterator[str]:
    """The URL of a registry replaying RECORDED (Apicurio's /apis/ccompat/v6 answers)."""
    _Replay.exchanges, _Replay.mismatches, _Replay.served = [dict(e) for e in RECORDED], [], 0
    server = HTTPServer(("127.0.0.1", 0), _Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/apis/ccompat/v6/"
    finally:
        server.shutdown()
        server.server_close()


def test_avro_confluent_wire_format_recorded_exchange(rows: TableRows, replay: str) -> None:
    """confluent-kafka's client registers the schema as Apicurio saw it (subject by strategy, schema JSON), and
    the values are magic byte 0, the id Apicurio gave, then the schemaless body."""
    ser = AvroSerializer(schema_registry=replay)  # subject_name_strategy topic by default
    values = ser.encode(rows, "p", topic="shop.orders")
    assert _Replay.mismatches == [] and _Replay.served == 1
    assert all(v[:1] == b"\x00" and struct.unpack(">I", v[1:5])[0] == 2 for v in values)
    assert [v[5:] for v in values] == AvroSerializer().encode(rows, "p")
    assert [ser.decode(v) for v in values] == [c.to_dict() for c in rows.changes("p")]
    ser.encode(rows, "p", topic="shop.orders")  # registered once: no second request
    assert _Replay.served == 1
    with pytest.raises(ValueError, match="subject_name_strategy topic needs the topic"):
        ser.encode(rows, "p")

    by_record = AvroSerializer(schema_registry=replay, subject_name_strategy="record")
    assert by_record.encode(rows, "p")[0][:5] == b"\x00\x00\x00\x00\x02"  # subject dbus.shop.orders.Change
    assert _Replay.mismatches == [] and _Replay.served == 2

    # the registry refuses a schema (Apicurio's 409 under compatibility FULL): one line naming URL and subject
    other = TableRows.from_changes([change("insert", None, {"id": "a", "name": "x"}, 1)],
                                   pa.struct([("id", pa.string()), ("name", pa.string())]))
    with pytest.raises(ValueError) as refused:
        AvroSerializer(schema_registry=replay).encode(other, "p", topic="shop.orders")
    assert _Replay.mismatches == [] and _Replay.served == 3
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"schema registry {replay.rstrip('/')}: cannot register shop.orders-value: "
                              "Incompatible artifact: shop.orders-value [AVRO]")
    assert "HTTP status code 409" in message


def test_avro_subject_name_strategies(rows: TableRows) -> None:
    ts = AvroSerializer().table_schema(rows)
    names = {s: AvroSerializer(subject_name_strategy=s).subject(ts, "cdc") for s in ("topic", "record", "topic_record")}
    assert names == {"topic": "cdc-value", "record": "dbus.shop.orders.Change",
                     "topic_record": "cdc-dbus.shop.orders.Change"}
    with pytest.raises(ValueError, match="subject_name_strategy: expected one of topic, record, topic_record, got 'x'"):
        AvroSerializer(subject_name_strategy="x")


def test_avro_registry_unreachable(rows: TableRows) -> None:
    ser = AvroSerializer(schema_registry="http://127.0.0.1:1", timeout=2)
    with pytest.raises(ValueError, match="^schema registry http://127.0.0.1:1: cannot register t-value: .+") as exc:
        ser.encode(rows, "p", topic="t")
    assert "\n" not in str(exc.value)


def test_arrow_round_trip(rows: TableRows) -> None:
    [value] = get_serializer("arrow").encode(rows, "p")
    [back] = from_ipc(value)
    assert (back.db, back.table, back.key) == (rows.db, rows.table, rows.key)
    assert back.data.equals(rows.data)
    assert [c.to_dict() for c in back.changes("p")] == [c.to_dict() for c in rows.changes("p")]


def test_json_encoder_equals_dumps(rows: TableRows) -> None:
    from dbus_ray.serializers.json import encode_json

    for c in rows.changes("p"):
        assert encode_json(c.to_dict()) == dumps(c.to_dict()) == STDLIB.encode(c.to_dict())
        assert encode_json(c.position.to_dict()) == STDLIB.encode(c.position.to_dict())
