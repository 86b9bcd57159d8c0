"""`format: debezium` against Debezium itself: Debezium's MariaDB connector (embedded engine, see
debezium_runner.py) and our pipeline (mysql source -> kafka sink with `format: debezium`, through Ray, to
the session's broker) read the same MariaDB: a snapshot of every type of the type-fidelity table, then
inserts, updates (multi-row events), primary-key changes (one of a key whose order is not the columns'),
deletes and DDL. The schema change topic holds the snapshot's statements (charset, DROP/CREATE of the
database and the tables) then the streamed DDL. Both outputs are compared message by message per topic: key
(with its fields' order), value and the key-change headers equal, except the fields listed in IGNORED
(timestamps and the connector's own version). Run by `make peer` (needs `make peer-deps`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dbus_ray.config import parse_config
from dbus_ray.pipeline import run_pipeline
from tests.peer.debezium_runner import Debezium, missing
from tests.support.helpers import execute
from tests.support.mysql_types import TYPE_ROWS, TYPES_DDL
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

DB = "dbz_peer"
#: A database on the same server that neither side includes: none of its statements is on either topic.
OTHER = "dbz_peer_other"
PREFIX = "peer"
#: Fields that must differ: when each side read the change, and which software wrote it.
IGNORED_SOURCE = {"version", "ts_ms", "ts_us", "ts_ns"}
IGNORED_ENVELOPE = {"ts_ms", "ts_us", "ts_ns"}
#: Headers compared (Debezium's `__debezium.context.*` headers name its engine run).
HEADERS = ("__debezium.newkey", "__debezium.oldkey")

ITEMS_DDL = f"CREATE TABLE {DB}.items (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, amount DECIMAL(10,2))"

#: A key whose order (b, a) is not the columns' (a, b): the message key's struct follows the key's order.
PAIRS_DDL = f"CREATE TABLE {DB}.pairs (a INT NOT NULL, b VARCHAR(8) NOT NULL, v INT, PRIMARY KEY (b, a))"

ALTER_DDL = f"ALTER TABLE {DB}.items ADD COLUMN note VARCHAR(20) NULL"
#: A table created while streaming (no rows): its schema change message, columns of several kinds.
EXTRA_DDL = (f"CREATE TABLE {DB}.extra (id BIGINT(20) NOT NULL AUTO_INCREMENT PRIMARY KEY, "
             "label VARCHAR(30) NOT NULL DEFAULT 'x', size ENUM('s','m','l'), price DECIMAL(8,3) UNSIGNED, "
             "at DATETIME(3), body TEXT COMMENT 'text', flags SET('a','b')) DEFAULT CHARSET=latin1")
#: Types written without the display width MariaDB adds, a default that is an expression.
PLAIN_DDL = (f"CREATE TABLE {DB}.plain (id INT PRIMARY KEY, n SMALLINT UNSIGNED, y YEAR, "
             "at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, d DATE DEFAULT '2020-01-02', f FLOAT DEFAULT 1.5)")

CHANGES = [
    # rows 3 and 4 of the type table (zero dates, fractions, all NULL), one event each
    *(f"INSERT INTO {DB}.types VALUES {row}" for row in TYPE_ROWS[2:]),
    # one multi-row event: `source.row` counts inside it
    f"INSERT INTO {DB}.items VALUES (10, 'ten', 10.00), (11, 'eleven', -0.01), (12, 'twelve', NULL)",
    f"UPDATE {DB}.types SET vc = 'changed', d41 = 1.5, dt6 = '2001-02-03 04:05:06.7' WHERE id = 1",
    f"UPDATE {DB}.items SET amount = amount + 1 WHERE id BETWEEN 10 AND 12",
    f"UPDATE {DB}.items SET id = 100 WHERE id = 2",  # primary-key change
    f"UPDATE {DB}.pairs SET v = v + 1",
    f"UPDATE {DB}.pairs SET b = 'moved' WHERE a = 2",  # a change of one column of a two-column key
    f"DELETE FROM {DB}.items WHERE id = 3",
    f"DELETE FROM {DB}.types WHERE id = 2",
    # runs of 64 rows or more, which the sink turns into messages column by column
    # (`serializers/debezium_columns.py`): every type, inserted, updated, deleted, without zero dates (ids 100
    # on) and with them (200 on: DATETIME value by value), each run between two of another table (items 300 on,
    # 600 on); and a run of key changes, which it leaves to the per-row way
    *(statement for low, rows in ((100, [TYPE_ROWS[0], TYPE_ROWS[3]] * 35), (200, TYPE_ROWS * 20))
      for statement in (
        f"INSERT INTO {DB}.types VALUES " + ", ".join(f"({low + k}{row[row.index(','):]}"
                                                      for k, row in enumerate(rows)),
        f"INSERT INTO {DB}.items VALUES " + ", ".join(f"({3 * low + k}, 'n{k}', {'NULL' if k % 7 == 0 else k - 35.5})"
                                                      for k in range(70)),
        f"UPDATE {DB}.types SET vc = CONCAT('bulk ', CHAR(34, 92, 10 USING utf8mb4), id), d41 = -d41 "
        f"WHERE id >= {low}",
        f"UPDATE {DB}.items SET amount = -amount, name = CONCAT(name, ',') WHERE id BETWEEN {3 * low} AND 99999",
        f"DELETE FROM {DB}.types WHERE id >= {low}",
        f"UPDATE {DB}.items SET id = id + 1000 WHERE id >= {3 * low} AND id < {3 * low + 100}",
    )),
    ALTER_DDL,
    EXTRA_DDL,
    PLAIN_DDL,
    f"INSERT INTO {DB}.items VALUES (13, 'thirteen', 13.13, 'after ddl')",
    f"UPDATE {DB}.items SET note = 'n' WHERE id = 1",
]


def normalized(text: str | None) -> Any:
    """A JsonConverter key or value, parsed, without the fields that must differ."""
    if text is None:
        return None
    value = json.loads(text)
    payload = value.get("payload") if isinstance(value, dict) and "schema" in value else value
    if isinstance(payload, dict) and "status" in payload:  # transaction BEGIN/END: its commit time
        payload.pop("ts_ms", None)
    if isinstance(payload, dict) and "source" in payload:
        for name in IGNORED_ENVELOPE:
            payload.pop(name, None)
        for name in IGNORED_SOURCE:
            payload["source"].pop(name, None)
    return value


#: Integer types and YEAR, whose display width MariaDB adds when the statement gives none.
WIDTH_TYPES = ("TINYINT", "SMALLINT", "MEDIUMINT", "INT", "BIGINT", "YEAR")


def kept_differences(ours: Any, theirs: Any) -> None:
    """The difference the README lists for schema changes: a column's `length` when a streamed statement wrote
    an integer type or YEAR without a width (Debezium: none; ours: the width information_schema shows, as
    Debezium has it after a snapshot). Set to Debezium's value in `ours` when it is exactly that case."""
    if not (isinstance(ours, dict) and isinstance(theirs, dict)):
        return
    mine, their = ours.get("payload", ours), theirs.get("payload", theirs)
    if not isinstance(mine, dict) or "tableChanges" not in mine or "tableChanges" not in their:
        return
    for a, b in zip(mine["tableChanges"], their["tableChanges"]):
        for x, y in zip((a.get("table") or {}).get("columns", []), (b.get("table") or {}).get("columns", [])):
            base = x["typeName"].removesuffix(" UNSIGNED")
            if base in WIDTH_TYPES and y["length"] is None and isinstance(x["length"], int):
                x["length"] = None


def key_order(text: str | None) -> Any:
    """The field names of a message key in their order: the schema's fields and the payload's."""
    if text is None:
        return None
    key = json.loads(text)
    if isinstance(key, dict) and "schema" in key:
        return [f["field"] for f in key["schema"]["fields"]], list(key["payload"])
    return list(key)


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for k in list(theirs) + [k for k in ours if k not in theirs]:
            out += differences(ours.get(k, "<absent>"), theirs.get(k, "<absent>"), f"{path}.{k}")
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: ours {ours!r}, Debezium {theirs!r}"]


def in_table_order(records: list[dict[str, Any]], schema_topic: str) -> list[dict[str, Any]]:
    """Debezium's records with each run of its snapshot's CREATE TABLE messages (one database's) sorted by
    table: Debezium (`snapshot.locking.mode` none) collects them in a hash map, ours follow the snapshot's
    table order (by name); the README lists it."""
    out = list(records)
    runs: list[list[int]] = []
    for i, r in enumerate(out):
        payload = _payload(r) if r["topic"] == schema_topic else None
        creating = bool(payload and payload["source"]["snapshot"] == "true"
                        and [c["type"] for c in payload["tableChanges"]] == ["CREATE"])
        if creating and runs and runs[-1][-1] == i - 1 and _payload(out[runs[-1][-1]])["databaseName"] \
                == payload["databaseName"]:
            runs[-1].append(i)
        elif creating:
            runs.append([i])
    for run in runs:
        ordered = sorted((out[i] for i in run), key=lambda r: _payload(r)["tableChanges"][0]["id"])
        for i, r in zip(run, ordered):
            out[i] = r
    return out


def _payload(record: dict[str, Any]) -> Any:
    value = json.loads(record["value"])
    return value.get("payload", value) if "schema" in value else value


def ours_as_records(msgs: list[Any]) -> list[dict[str, Any]]:
    return [{"topic": m.topic(), "key": None if m.key() is None else m.key().decode(),
             "value": None if m.value() is None else m.value().decode(),
             "headers": {k: v.decode() for k, v in m.headers() or ()}} for m in msgs]


#: Option sets, ours (the sink's `debezium:` section) and Debezium's properties: the defaults, and the other
#: values of the options users set most.
OPTIONS = {
    "defaults": ({"heartbeat_interval_ms": 300}, {"heartbeat.interval.ms": "300"}),
    "transactions": ({"provide_transaction_metadata": True}, {"provide.transaction.metadata": "true"}),
    "other-modes": (
        {"schemas_enable": False, "tombstones_on_delete": False, "decimal_handling_mode": "string",
         "time_precision_mode": "connect", "binary_handling_mode": "hex", "bigint_unsigned_handling_mode": "precise",
         "provide_transaction_metadata": True},
        {"converter.schemas.enable": "false", "tombstones.on.delete": "false", "decimal.handling.mode": "string",
         "time.precision.mode": "connect", "binary.handling.mode": "hex", "bigint.unsigned.handling.mode": "precise",
         "provide.transaction.metadata": "true"},
    ),
}


def pipeline_config(tmp_path: Path, mariadb: Any, broker: Any, options: dict[str, Any]) -> Any:
    raw = {
        "name": f"dbz-{options['topic_prefix']}",
        "source": {"type": "mysql", "dsn": mariadb.dsn, "server_id": 7401, "include": [f"{DB}.*"],
                   "snapshot": "initial"},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "format": "debezium",
                   "partitions": 1, "debezium": {"topic_prefix": PREFIX, "connector": "mariadb", **options}}],
        "data_dir": str(tmp_path / "data"),
    }
    return parse_config(raw, "dbz-peer.yaml", {})


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("mode", list(OPTIONS))
def test_same_messages_as_debezium(tmp_path: Path, mariadb: Any, broker: Any, root: Any, mode: str) -> None:
    ours_options, their_options = OPTIONS[mode]
    prefix = f"{PREFIX}-{mode}"
    reason = missing()
    if reason:
        pytest.fail(reason)
    execute(root, "SET SESSION sql_mode = ''", f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB}",
            f"CREATE DATABASE IF NOT EXISTS {OTHER}", f"CREATE TABLE IF NOT EXISTS {OTHER}.t (id INT PRIMARY KEY)",
            TYPES_DDL.format(t=f"{DB}.types"), ITEMS_DDL, PAIRS_DDL,
            f"INSERT INTO {DB}.pairs VALUES (1, 'k', 10), (2, 'k', 20), (3, 'j', 30)",
            *(f"INSERT INTO {DB}.types VALUES {row}" for row in TYPE_ROWS[:2]),
            f"INSERT INTO {DB}.items VALUES (1, 'one', 1.50), (2, 'two', 2.00), (3, 'three', 3.33)",
            # more rows than the sink turns into messages at once (`debezium.SLICE_ROWS`): the snapshot's slices
            # before the last built column by column
            f"INSERT INTO {DB}.items VALUES " + ", ".join(f"({100_000 + k}, 's{k}', {k / 8 - 99})"
                                                          for k in range(2100)))
    dbz = Debezium(tmp_path / "debezium", host=mariadb.host, port=mariadb.port, user="root",
                   password=mariadb.root_password, databases=[DB], topic_prefix=prefix, extra=their_options).start()
    try:
        dbz.wait_for("end of the snapshot", lambda rs: any('"snapshot":"last"' in (r["value"] or "") for r in rs))
        cfg = pipeline_config(tmp_path, mariadb, broker, {**ours_options, "topic_prefix": prefix})
        final = run_pipeline(cfg, until_caught_up=True, interval=0.1)  # the snapshot, same rows as Debezium's
        assert final["error"] is None, final["error"]
        execute(root, "SET SESSION sql_mode = ''", *CHANGES)
        final = run_pipeline(cfg, until_caught_up=True, interval=0.1)  # resumes: the changes
        assert final["error"] is None, final["error"]
        topics = [f"{prefix}.{DB}.types", f"{prefix}.{DB}.items", f"{prefix}.{DB}.pairs", prefix]
        if ours_options.get("provide_transaction_metadata"):
            topics.append(f"{prefix}.transaction")
        ours = {t: ours_as_records(read_topic(broker.bootstrap, t)) for t in topics}
        expected = sum(len(v) for v in ours.values())
        tables = set(topics)
        theirs_all = dbz.wait_for(f"{expected} records",
                                  lambda rs: sum(r["topic"] in tables for r in rs) >= expected)
        beats: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        if ours_options.get("heartbeat_interval_ms"):
            hb_topic = f"__debezium-heartbeat.{prefix}"
            beats = (ours_as_records(read_topic(broker.bootstrap, hb_topic)),
                     [r for r in dbz.wait_for("a heartbeat", lambda rs: any(r["topic"] == hb_topic for r in rs))
                      if r["topic"] == hb_topic])
        theirs_all = in_table_order(theirs_all, prefix)
    finally:
        dbz.stop()
    ddl = [json.loads(r["value"]) for r in ours[prefix]]
    statements = [(v.get("payload", v)["ddl"], [c["type"] for c in v.get("payload", v)["tableChanges"]]) for v in ddl]
    assert [s[0].split("\n")[0] for s in statements[:10]] == [  # the snapshot's, as Debezium writes them
        "SET character_set_server=utf8mb4, collation_server=utf8mb4_general_ci",
        *(f"DROP TABLE IF EXISTS `{DB}`.`{t}`" for t in ("items", "pairs", "types")),
        f"DROP DATABASE IF EXISTS `{DB}`", f"CREATE DATABASE `{DB}` CHARSET utf8mb4 COLLATE utf8mb4_general_ci",
        f"USE `{DB}`", *(f"CREATE TABLE `{t}` (" for t in ("items", "pairs", "types"))]
    assert [s[1] for s in statements[:10]] == [[], *[["DROP"]] * 3, [], [], [], *[["CREATE"]] * 3]
    assert statements[10:] == [(ALTER_DDL, ["ALTER"]), (EXTRA_DDL, ["CREATE"]), (PLAIN_DDL, ["CREATE"])]
    problems = []
    if ours_options.get("heartbeat_interval_ms"):  # the heartbeat topic: key equal, value but its time
        mine_beats, their_beats = beats
        assert mine_beats, "no heartbeat of ours"
        for a in mine_beats:
            b = their_beats[0]
            problems += [f"heartbeat key{d}" for d in differences(json.loads(a["key"]), json.loads(b["key"]))]
            mine_v, theirs_v = json.loads(a["value"]), json.loads(b["value"])
            assert isinstance(mine_v["payload"].pop("ts_ms"), int) and isinstance(theirs_v["payload"].pop("ts_ms"), int)
            problems += [f"heartbeat value{d}" for d in differences(mine_v, theirs_v)]
    for table, mine in ours.items():
        theirs = [r for r in theirs_all if r["topic"] == table]
        assert len(mine) == len(theirs), (table, [r["value"] for r in theirs], [r["value"] for r in mine])
        for i, (a, b) in enumerate(zip(mine, theirs)):
            where = f"{table} message {i}"
            problems += [f"{where} key{d}" for d in differences(normalized(a["key"]), normalized(b["key"]))]
            if key_order(a["key"]) != key_order(b["key"]):  # (`differences` compares objects by name)
                problems.append(f"{where} key order: ours {key_order(a['key'])}, Debezium {key_order(b['key'])}")
            mine_v, theirs_v = normalized(a["value"]), normalized(b["value"])
            kept_differences(mine_v, theirs_v)
            problems += [f"{where} value{d}" for d in differences(mine_v, theirs_v)]
            for h in HEADERS:
                problems += [f"{where} header {h}{d}" for d in
                             differences(normalized(a["headers"].get(h)), normalized(b["headers"].get(h)))]
    assert not problems, "\n".join(problems[:60])
