"""`dbus demo`: the real path on a laptop with nothing configured.

Starts a private MariaDB (binlog on) and an Apache Kafka broker, creates `shop.orders`, writes
inserts, updates and deletes while a MySQL -> Kafka pipeline runs on a local Ray, shows live
progress, then a summary (rows written vs delivered, rows/s, lag) and a few messages read back from
Kafka. Everything it started is stopped at the end.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import time
from decimal import Decimal
from typing import Any

from dbus_ray.config import parse_config
from dbus_ray.devstack import DevStack
from dbus_ray.pipeline import connect_ray, run_pipeline

TOPIC = "dbus.shop.orders"
SCHEMA = """
CREATE TABLE shop.orders (
  id BIGINT UNSIGNED PRIMARY KEY,
  customer VARCHAR(64) NOT NULL,
  status ENUM('NEW','PAID','SHIPPED') NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  created DATETIME(6) NOT NULL,
  note TEXT
) CHARACTER SET utf8mb4
"""


class Workload(threading.Thread):
    """Writes `changes` row changes to shop.orders in small transactions: inserts, then updates and
    deletes of existing orders."""

    def __init__(self, connect: Any, changes: int, seed: int = 7) -> None:
        super().__init__(daemon=True, name="demo-workload")
        self.connect = connect
        self.target = changes
        self.written = 0
        self.rng = random.Random(seed)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the demo
            self.error = exc

    def _run(self) -> None:
        conn = self.connect()
        cur = conn.cursor()
        live: list[int] = []
        next_id = 1
        while self.written < self.target:
            cur.execute("BEGIN")
            n = 0
            for _ in range(min(20, self.target - self.written)):
                roll = self.rng.random()
                if not live or roll < 0.6:
                    cur.execute(
                        "INSERT INTO shop.orders VALUES (%s, %s, 'NEW', %s, NOW(6), %s)",
                        (next_id, f"customer-{next_id % 97}", Decimal(self.rng.randint(100, 99999)) / 100,
                         "first order 🚀" if next_id % 10 == 0 else None),
                    )
                    live.append(next_id)
                    next_id += 1
                elif roll < 0.9:
                    key = self.rng.choice(live)
                    cur.execute("UPDATE shop.orders SET status = IF(status='NEW','PAID','SHIPPED'), "
                                "amount = amount + 1 WHERE id = %s", (key,))
                else:
                    key = live.pop(self.rng.randrange(len(live)))
                    cur.execute("DELETE FROM shop.orders WHERE id = %s", (key,))
                n += cur.rowcount
            cur.execute("COMMIT")
            self.written += n
        conn.close()


def read_back(bootstrap: str, limit: int, timeout: float = 20.0) -> list[Any]:
    """Every message of the demo topic (all partitions), read with assign()."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dbus-demo", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(TOPIC, timeout=10)
        parts = list(meta.topics[TOPIC].partitions)
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in parts])
        messages = []
        deadline = time.monotonic() + timeout
        while len(messages) < limit and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None:
                    messages.append(msg)
        return messages
    finally:
        consumer.close()


def run_demo(rows: int = 50_000, address: str | None = None, out: Any = sys.stderr) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    say("demo: starting a private MariaDB (binlog on) and an Apache Kafka broker ...")
    with DevStack() as stack, tempfile.TemporaryDirectory(prefix="dbus-demo-") as data:
        db, broker = stack.mariadb, stack.broker
        say(f"demo: MariaDB at {db.host}:{db.port}, broker at {broker.bootstrap}")
        admin = db.root_connect()
        with admin.cursor() as cur:
            cur.execute("CREATE DATABASE shop")
            cur.execute(SCHEMA)
        admin.close()
        say("demo: starting Ray ...")
        connect_ray(address)
        cfg = parse_config({
            "name": "demo",
            "source": {"type": "mysql", "dsn": db.dsn, "start": "latest", "include": ["shop.*"]},
            "sinks": [{"name": "kafka", "type": "kafka", "bootstrap": broker.bootstrap,
                       "topic": "dbus.{db}.{table}", "partitions": 4}],
            "data_dir": data,
        }, "demo", {})
        workload = Workload(lambda: db.root_connect(), rows)
        started = time.monotonic()
        last: dict[str, Any] = {}

        def progress(status: dict[str, Any]) -> None:
            last.update(status)
            if status["state"] == "running" and workload.ident is None:
                workload.start()
            elapsed = time.monotonic() - started
            line = (f"\rdemo: written {workload.written:>8,}  delivered {status['rows_delivered']:>8,}  "
                    f"{status['rows_delivered'] / max(elapsed, 1e-9):>9,.0f} rows/s  lag {status['lag_seconds']:.2f}s")
            out.write(line)
            out.flush()

        def done() -> bool:
            if workload.error is not None:
                return True
            finished = workload.written >= rows and not workload.is_alive()
            return finished and last.get("rows_delivered", 0) >= workload.written

        say("demo: pipeline demo: mysql -> kafka; writing inserts, updates and deletes ...")
        final = run_pipeline(cfg, on_progress=progress, should_stop=done, interval=0.2)
        elapsed = time.monotonic() - started
        out.write("\n")
        if workload.error is not None:
            say(f"demo: the workload failed: {workload.error}")
            return 1
        if final["state"] == "failed":
            say(f"demo: pipeline failed: {final['error']}")
            return 1
        messages = read_back(broker.bootstrap, workload.written)
        say(f"demo: rows written {workload.written:,}, delivered {final['rows_delivered']:,}, "
            f"in Kafka {len(messages):,} (topic {TOPIC}); {final['rows_delivered'] / elapsed:,.0f} rows/s "
            f"over {elapsed:.1f}s; lag at the end {final['lag_seconds']:.2f}s")
        for msg in messages[:3]:
            value = json.loads(msg.value())
            say(f"  partition {msg.partition()} key {msg.key().decode()}: {value['op']} "
                f"before={json.dumps(value['before'], ensure_ascii=False)} "
                f"after={json.dumps(value['after'], ensure_ascii=False)}")
        ok = final["rows_delivered"] == workload.written == len(messages)
        say("demo: every row change arrived once" if ok else "demo: counts differ (see above)")
        return 0 if ok else 1
