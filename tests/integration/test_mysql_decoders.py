"""`source.decoders`: the binlog's rows decoded by decoder actors (`dbus_ray.mysql.decode_pool`), against a
real MariaDB. In process, a pool that sends every batch through pickle (as Ray does to another process)
and decodes it there; through Ray, a pipeline with two decoder actors, and one that loses a decoder. The
expected values are the server's own (`SELECT`) and the statements the tests ran."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import parse_config
from dbus_ray.errors import DecodeError
from dbus_ray.model import RowBatch
from dbus_ray.mysql import decode_pool
from dbus_ray.mysql import replica as rp
from dbus_ray.mysql.decode_pool import DEPTH_PER_DECODER, decode_packed
from dbus_ray.mysql.keys import MessageKeys
from dbus_ray.mysql.source import MysqlOptions, MysqlSource
from dbus_ray.mysql.streaming import BinlogStream
from dbus_ray.parcel import Remote
from tests.integration.test_mysql_source import select_json
from tests.support.helpers import execute, poll_once, position, table_name
from tests.support.mysql_types import TYPE_ROWS, create_type_table

pytestmark = pytest.mark.integration

DB = "dbus_test"


class PickledPool:
    """Decoders in this process: each batch of transactions arrives packed (pickled), as a decoder actor
    receives it, and the decoded batch stands where the object-store reference would. The decoders are
    slow: a batch is decoded only when the reader waits for it, so while `n` * DEPTH_PER_DECODER batches
    wait, the reader decodes the next ones itself."""

    def __init__(self, pipeline: str, options: Any, n: int) -> None:
        self.pipeline = pipeline
        self.keys = MessageKeys(pipeline, options.message_key_columns, options.key_change)
        self.room = n * DEPTH_PER_DECODER
        self.batches = 0
        self.working: list[list[bytes]] = []

    def full(self) -> bool:
        return len(self.working) >= self.room

    def decode(self, packed: bytes) -> Any:
        self.batches += 1
        handle = [packed]
        self.working.append(handle)
        return handle

    def done(self, handle: Any) -> bool:
        return all(h is not handle for h in self.working)

    def result(self, handle: Any) -> tuple[int, Any]:
        self.working = [h for h in self.working if h is not handle]
        batch = decode_packed(self.pipeline, handle[0], self.keys)  # (its error, as the actor's would be)
        return batch.num_rows, batch

    def close(self) -> None:
        pass


def source(mariadb: Any, **options: Any) -> MysqlSource:
    options.setdefault("server_id", 7002)
    src = MysqlSource("mysql-decoders", MysqlOptions(dsn=mariadb.dsn, decoders=2, **options))
    src.decode_pool = PickledPool
    return src


def local(batch: Any) -> RowBatch:
    """A batch as the writer sees it (a decoder's batch with the head the source gave it)."""
    if type(batch) is Remote:
        return RowBatch(batch.pipeline, batch.seq, batch.ref.parts, batch.checkpoint, batch.ts)
    return batch


def poll_all(src: MysqlSource, max_rows: int = 1000, by_decoders: list[RowBatch] | None = None) -> list[RowBatch]:
    """Every batch until caught up; those a decoder decoded also to `by_decoders`."""
    out: list[RowBatch] = []
    for _ in range(5000):
        batch = src.poll(max_rows, len(out) + 1)
        if batch is None:
            if src.caught_up():
                return out
            continue
        out.append(local(batch))
        if by_decoders is not None and type(batch) is Remote:
            by_decoders.append(out[-1])
    raise AssertionError("source never caught up")


def read_all(src: MysqlSource, max_rows: int, by_decoders: list[RowBatch]) -> list[RowBatch]:
    """Open `src`, `poll_all`, close."""
    src.open(None)
    try:
        return poll_all(src, max_rows, by_decoders)
    finally:
        src.close()


def rows_of(batches: list[RowBatch], table: str) -> list[dict[str, Any]]:
    return [json.loads(c.to_json()) for b in batches for c in b.changes() if c.table == table]


def test_decoded_elsewhere_every_type_matches_select(mariadb: Any, root: Any) -> None:
    t = table_name("dtypes")
    start = create_type_table(root, t)
    src = source(mariadb, start=start)
    src.open(None)
    try:
        batches = poll_all(src)
        assert src.decoding is not None and src.decoding.pool.batches >= 1  # the pool decoded them
    finally:
        src.close()
    got = [r["after"] for r in rows_of(batches, t)]
    expected = select_json(root, t)
    assert len(got) == len(TYPE_ROWS) == len(expected)
    for g, e in zip(got, expected):
        for k in e:
            assert g[k] == e[k], f"row {e['id']} column {k}: binlog {g[k]!r} != SELECT {e[k]!r}"


def test_ddl_xa_and_a_large_transaction_keep_binlog_order(mariadb: Any, root: Any, monkeypatch: Any) -> None:
    """Transactions a decoder cannot take (a DDL row, an XA group, one over RAW_TXN_BYTES) are decoded by the
    stream, in their place among the others."""
    monkeypatch.setattr("dbus_ray.mysql.streaming.RAW_TXN_BYTES", 2000)
    t = table_name("dorder")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, a VARCHAR(40), b INT)")
    start = position(root)
    execute(root, f"INSERT INTO {t} VALUES (1, 'one', 1)", f"INSERT INTO {t} VALUES (2, 'two', 2), (3, 'three', 3)")
    execute(root, "BEGIN", *(f"INSERT INTO {t} VALUES ({i}, '{'x' * 30}', {i})" for i in range(10, 110)), "COMMIT")
    execute(root, f"ALTER TABLE {t} ADD COLUMN c INT NULL", f"INSERT INTO {t} VALUES (200, 'after', 2, 20)")
    execute(root, "XA START 'x1'", f"INSERT INTO {t} VALUES (300, 'xa', 3, 30)", "XA END 'x1'", "XA PREPARE 'x1'",
            "XA COMMIT 'x1'")
    execute(root, f"UPDATE {t} SET b = b + 1 WHERE id IN (1, 200)", f"DELETE FROM {t} WHERE id = 2")
    src = source(mariadb, start=start)
    src.open(None)
    try:
        rows = rows_of(poll_all(src, 37), t)
    finally:
        src.close()
    ids = [(r["op"], (r["after"] or r["before"]).get("id")) for r in rows]
    assert ids == [("insert", 1), ("insert", 2), ("insert", 3), *[("insert", i) for i in range(10, 110)],
                   ("ddl", None), ("insert", 200), ("insert", 300), ("update", 1), ("update", 200), ("delete", 2)]
    assert rows[-2]["after"] == {"id": 200, "a": "after", "b": 3, "c": 20}
    big = [r["pos"] for r in rows[3:103]]
    assert [p["index"] for p in big] == list(range(100))  # one transaction's rows, numbered as the stream does


def test_resume_at_every_checkpoint_loses_and_repeats_nothing(mariadb: Any, root: Any) -> None:
    t = table_name("dresume")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT)")
    start = position(root)
    written: list[tuple[str, int]] = []
    for i in range(0, 60, 3):  # two rows events each: a decoder's (the one-row updates are the reader's)
        execute(root, "BEGIN", f"INSERT INTO {t} VALUES ({i}, 0), ({i + 1}, 0)", f"INSERT INTO {t} VALUES ({i + 2}, 0)",
                "COMMIT")
        written += [("insert", i), ("insert", i + 1), ("insert", i + 2)]
        if i % 9 == 0:
            execute(root, f"UPDATE {t} SET v = 1 WHERE id = {i}")
            written.append(("update", i))
    got: list[tuple[str, int]] = []
    checkpoint: dict[str, Any] | None = None
    for _ in range(200):
        batch = poll_once(source(mariadb, start=start, include=[f"{DB}.{t}"]), checkpoint, 5)
        if batch is None:
            break
        got += [(r["op"], r["after"]["id"]) for r in rows_of([local(batch)], t)]
        checkpoint = batch.checkpoint
    assert got == written


def test_the_reader_decodes_while_the_decoders_are_full_and_order_holds(mariadb: Any, root: Any) -> None:
    t = table_name("dhere")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v DECIMAL(12,2), s VARCHAR(20))")
    start = position(root)
    for i in range(0, 300, 3):  # transactions of 3 rows in two rows events (a decoder's)
        execute(root, "BEGIN", f"INSERT INTO {t} VALUES " + ", ".join(f"({k}, {k}.25, 'row-{k}')" for k in (i, i + 1)),
                f"INSERT INTO {t} VALUES ({i + 2}, {i + 2}.25, 'row-{i + 2}')", "COMMIT")
    remote: list[RowBatch] = []
    batches = read_all(source(mariadb, start=start, include=[f"{DB}.{t}"]), 7, remote)
    by = {"decoders": len(remote), "reader": len(batches) - len(remote)}
    assert by["decoders"] and by["reader"], by  # both decoded some batches
    with root.cursor() as cur:
        cur.execute(f"SELECT id, CAST(v AS CHAR), s FROM {t} ORDER BY id")
        expected = [{"id": i, "v": v, "s": v_s} for i, v, v_s in cur.fetchall()]
    assert [r["after"] for r in rows_of(batches, t)] == expected  # every row once, in binlog (= id) order


def test_small_one_event_transactions_are_decoded_by_the_reader_the_rest_by_decoders(mariadb: Any, root: Any,
                                                                                    monkeypatch: Any) -> None:
    """A busy primary's one-row statements cost the reader more to hand out than to decode: with decoders
    they are decoded by the stream as without them, while a transaction of two rows events and one of a
    rows event over INLINE_ROWS_BYTES go to a decoder, in their place."""
    t = table_name("dinline")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(40))")
    start = position(root)
    execute(root, *(f"INSERT INTO {t} VALUES ({i}, 'one-{i}')" for i in range(20)))
    execute(root, "BEGIN", f"INSERT INTO {t} VALUES (100, 'two events')", f"INSERT INTO {t} VALUES (101, 'b')",
            "COMMIT")
    execute(root, *(f"INSERT INTO {t} VALUES ({i}, 'one-{i}')" for i in range(20, 25)))
    big = range(200, 250)  # one rows event of 50 rows of about 40 bytes: over INLINE_ROWS_BYTES
    execute(root, f"INSERT INTO {t} VALUES " + ", ".join(f"({i}, '{'x' * 36}')" for i in big))
    execute(root, *(f"INSERT INTO {t} VALUES ({i}, 'one-{i}')" for i in range(25, 30)))
    framed: dict[str, bool] = {}  # GTID -> its three events after it were framed at every call of the short way
    quick = BinlogStream._quick_txn

    def counted(self: BinlogStream, ev: Any, ahead: Any) -> bool:
        gtid = rp.mariadb_gtid(ev)[0]
        framed[gtid] = framed.get(gtid, True) and len(ahead) >= 3  # (how the socket's reads cut the stream)
        return quick(self, ev, ahead)

    monkeypatch.setattr(BinlogStream, "_quick_txn", counted)
    remote: list[RowBatch] = []
    batches = read_all(source(mariadb, start=start, include=[f"{DB}.{t}"]), 1000, remote)
    by_decoders: list[list[int]] = []  # the ids of each transaction a decoder decoded
    for got in (rows_of([b], t) for b in remote):
        by_decoders += [[r["after"]["id"] for r in got if r["pos"]["gtid"] == g]
                        for g in dict.fromkeys(r["pos"]["gtid"] for r in got)]
    rows = rows_of(batches, t)
    gtid_of = {r["after"]["id"]: r["pos"]["gtid"] for r in rows}
    # where the socket's reads did not cut it: a one-row transaction decoded by the reader (but the first, its
    # table map new), the other two by a decoder (a cut one goes the long way: a decoder's only when first)
    whole = {i for i in gtid_of if framed.get(gtid_of[i])}
    assert by_decoders[0] == [0]
    assert not [b for b in by_decoders[1:] if len(b) == 1 and b[0] in whole], by_decoders
    assert [b for b in ([100, 101], list(big)) if b[0] in whole and b not in by_decoders] == [], by_decoders
    assert len(whole & set(range(30))) >= 20, framed  # (most one-row ones: the test checks something)
    with root.cursor() as cur:
        cur.execute(f"SELECT id, s FROM {t}")
        expected = {i: {"id": i, "s": v} for i, v in cur.fetchall()}
    assert [r["after"]["id"] for r in rows] == [*range(20), 100, 101, *range(20, 25), *big, *range(25, 30)]
    assert {r["after"]["id"]: r["after"] for r in rows} == expected


def test_a_decode_error_names_its_position_after_the_rows_before_it(mariadb: Any, root: Any,
                                                                       monkeypatch: Any) -> None:
    t = table_name("derr")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY)")
    start = position(root)
    execute(root, "BEGIN", f"INSERT INTO {t} VALUES (1)", f"INSERT INTO {t} VALUES (11)", "COMMIT")  # a decoder's
    real = decode_pool.row_images

    def broken(ev: Any, layout: Any, file: str, offset: int, *rest: Any) -> Any:
        if real(ev, layout, file, offset, *rest)[2][0] == [2]:
            raise DecodeError(f"binlog {file}:{offset}: broken on purpose")
        return real(ev, layout, file, offset, *rest)

    monkeypatch.setattr(decode_pool, "row_images", broken)
    src = source(mariadb, start=start, include=[f"{DB}.{t}"])
    src.open(None)
    try:
        first = local(src.poll(1000, 1))
        assert [r["after"]["id"] for r in rows_of([first], t)] == [1, 11]
        execute(root, "BEGIN", f"INSERT INTO {t} VALUES (2)", f"INSERT INTO {t} VALUES (12)", "COMMIT")
        with pytest.raises(DecodeError, match=r"binlog .*:\d+: broken on purpose"):
            for seq in range(2, 50):
                assert src.poll(1000, seq) is None
    finally:
        src.close()


def two_decoders(mariadb: Any, t: str, start: str, tmp_path: Path, read_batch_rows: int,
                 placement: str = "auto") -> Any:
    """A pipeline of table `t` from `start` with two decoder actors into `tmp_path/out.jsonl`."""
    return parse_config({
        "name": f"mysql-{t}".replace("_", "-"),
        "source": {"type": "mysql", "dsn": "mysql://dbus:${PW}@127.0.0.1:" + str(mariadb.port), "start": start,
                   "include": [f"{DB}.{t}"], "decoders": 2},
        "sinks": [{"name": "file", "type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
        "flow": {"read_batch_rows": read_batch_rows, "max_rows_in_flight": 4 * read_batch_rows,
                 "placement": placement},
        "data_dir": str(tmp_path / "data"),
    }, "mysql.yaml", {"PW": mariadb.password})


@pytest.mark.parametrize("placement", ["auto", "spread"])
def test_pipeline_with_two_decoder_actors(mariadb: Any, root: Any, ray_session: None, tmp_path: Path,
                                          placement: str) -> None:
    from dbus_ray.pipeline import run_pipeline

    t = table_name("dpipe")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v DECIMAL(20,4), s VARCHAR(20))")
    start = position(root)
    for k in range(20):
        execute(root, "BEGIN", *(f"INSERT INTO {t} VALUES ({i}, {i}.0125, 'row-{i}')"
                                 for i in range(k * 50, k * 50 + 50)), "COMMIT")
    execute(root, f"UPDATE {t} SET s = 'changed' WHERE id < 100", f"DELETE FROM {t} WHERE id >= 900")
    out = tmp_path / "out.jsonl"
    cfg = two_decoders(mariadb, t, start, tmp_path, 64, placement)
    assert cfg.placement == {"auto": "fused", "spread": "spread"}[placement]
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None and final["state"] == "stopped"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["op"], (r["after"] or r["before"])["id"]) for r in rows] == \
        [("insert", i) for i in range(1000)] + [("update", i) for i in range(100)] + \
        [("delete", i) for i in range(900, 1000)]
    with root.cursor() as cur:
        cur.execute(f"SELECT id, CAST(v AS CHAR), s FROM {t}")
        expected = {i: {"id": i, "v": v, "s": s} for i, v, s in cur.fetchall()}
    final_rows = {}
    for r in rows:
        if r["op"] == "delete":
            final_rows.pop(r["before"]["id"])
        else:
            final_rows[r["after"]["id"]] = r["after"]
    assert final_rows == expected


def test_a_lost_decoder_stops_the_pipeline_and_a_rerun_delivers_every_row(mariadb: Any, root: Any,
                                                                          ray_session: None, tmp_path: Path) -> None:
    import ray

    from dbus_ray.constants import NAMESPACE, actor_name
    from dbus_ray.pipeline import Pipeline, run_pipeline

    t = table_name("dlost")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(20))")
    start = position(root)
    for i in range(0, 3000, 2):  # two rows events each: decoder batches of `read_batch_rows` rows events
        execute(root, "BEGIN", f"INSERT INTO {t} VALUES ({i}, 'row-{i}')",
                f"INSERT INTO {t} VALUES ({i + 1}, 'row-{i + 1}')", "COMMIT")
    out = tmp_path / "out.jsonl"
    cfg = two_decoders(mariadb, t, start, tmp_path, 100)
    pipeline = Pipeline(cfg)
    pipeline.start()
    try:
        ray.kill(ray.get_actor(actor_name(cfg.name, "decoder", "1"), namespace=NAMESPACE), no_restart=True)
        for _ in range(600):
            status = pipeline.status()
            if status["state"] == "failed":
                break
            time.sleep(0.05)
        assert status["state"] == "failed", status
        assert f"decoder {actor_name(cfg.name, 'decoder', '1')} was lost" in status["error"]
        assert status["rows_delivered"] < 3000  # stopped before the lost decoder's rows
    finally:
        pipeline.stop()
    final = run_pipeline(cfg, until_caught_up=True, interval=0.1)
    assert final["error"] is None and final["state"] == "stopped"
    ids = [json.loads(line)["after"]["id"] for line in out.read_text().splitlines()]
    assert sorted(set(ids)) == list(range(3000))  # every row (at least once: the sink is at-least-once)
    first = list(dict.fromkeys(ids))
    assert first == list(range(3000))  # in binlog order
