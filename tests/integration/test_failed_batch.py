"""A batch a sink fails is never passed by the checkpoint: the writer delivers and acknowledges nothing
after it, the pipeline stops, and a rerun meets the same row again (MariaDB, broker and Ray for real)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.devstack import MariaDB
from tests.support.topics import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]


def keys_in(bootstrap: str, topic: str) -> list[int]:
    """Every record's `id` key in `topic`, read by a plain Kafka consumer (none while there is no topic)."""
    return [json.loads(m.key())["id"] for m in read_topic(bootstrap, topic, missing_ok=True)]


def test_oversize_row_stops_the_pipeline_and_the_checkpoint_stays_before_it(
    tmp_path: Path, mariadb: MariaDB, broker: Any
) -> None:
    table = f"fb_{uuid.uuid4().hex[:8]}"
    topic = f"failed-batch-{uuid.uuid4().hex[:6]}"
    conn = mariadb.root_connect("dbus_test")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, b LONGBLOB)")
            cur.execute("SHOW MASTER STATUS")
            file, start = cur.fetchone()[:2]
            cur.execute(f"INSERT INTO {table} VALUES (1, 'small')")
            conn.commit()
            cur.execute("SHOW MASTER STATUS")
            before_big = cur.fetchone()[1]  # where the big row's transaction starts
            cur.execute(f"INSERT INTO {table} VALUES (3, REPEAT('x', 2000000))")  # over 1 MB: refused
            conn.commit()
            cur.execute(f"INSERT INTO {table} VALUES (2, 'small')")
            conn.commit()
    finally:
        conn.close()
    raw = {
        "name": f"fb-{uuid.uuid4().hex[:6]}",
        "source": {"type": "mysql", "dsn": f"mysql://{mariadb.user}:{mariadb.password}@127.0.0.1:{mariadb.port}",
                   "start": f"{file}:{start}", "include": [f"dbus_test.{table}"]},
        "sinks": [{"name": "k", "type": "kafka", "bootstrap": broker.bootstrap, "topic": topic}],
        # a batch per row, handed on at once: later batches reach the writer after the failed one
        "flow": {"read_batch_rows": 1, "sink_batch_rows": 1, "linger_ms": 0, "max_rows_in_flight": 10},
        "data_dir": str(tmp_path / "data"),
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    checkpoint_file = tmp_path / "data" / raw["name"] / "checkpoint.json"

    for attempt in (1, 2):  # a rerun meets the same row: it was never skipped
        result = CliRunner().invoke(app, ["run", str(path), "--until-caught-up"])
        assert result.exit_code == 1, (attempt, result.output)
        assert "Message size too large" in result.output and "key {\"id\":3}" in result.output, result.output
        saved = json.loads(checkpoint_file.read_text())["source"] if checkpoint_file.exists() else None
        assert saved is None or (saved["file"], saved["offset"]) <= (file, before_big), (attempt, saved)
        delivered = keys_in(broker.bootstrap, topic)
        assert 2 not in delivered, f"a row after the failed one was delivered: {delivered}"
        assert set(delivered) <= {1}

    raw["sinks"][0].update(on_oversize="dead_letter", dead_letter_topic=f"{topic}-dead")
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["run", str(path), "--until-caught-up"])
    assert result.exit_code == 0, result.output
    assert 2 in keys_in(broker.bootstrap, topic)
    assert keys_in(broker.bootstrap, f"{topic}-dead") == [3]
