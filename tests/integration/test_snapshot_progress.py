"""Snapshot progress where operators see it: `dbus status` (table and JSON) and the `dbus run` live line,
against a pipeline the controller runs with a throttled snapshot of a real MariaDB."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import ray

from tests.support.helpers import execute, table_name, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

DB = "dbus_test"


def mysql_spec(mariadb: Any, tmp_path: Path, name: str, table: str, **source: Any) -> dict[str, Any]:
    return {"name": name, "data_dir": str(tmp_path / "data"),
            "source": {"type": "mysql", "dsn": f"mysql://{mariadb.user}:${{PW}}@127.0.0.1:{mariadb.port}",
                       "include": [f"{DB}.{table}"], **source},
            "sinks": [{"name": "file", "type": "jsonl", "path": str(tmp_path / f"{name}.jsonl"), "fsync": False}],
            "flow": {"read_batch_rows": 200, "max_rows_in_flight": 1000}}


def status_json(runner: Any, app: Any, name: str) -> dict[str, Any]:
    result = runner.invoke(app, ["status", name, "-o", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]


def test_status_and_run_line_show_snapshot_progress(controller: Any, mariadb: Any, root: Any,
                                                    tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dbus_ray.cli import Progress, app
    from dbus_ray.pipeline import NAMESPACE, actor_name

    t = table_name("snap_prog")
    execute(root, f"CREATE TABLE {t} (id INT PRIMARY KEY, v INT)",
            f"INSERT INTO {t} SELECT seq, seq % 7 FROM seq_1_to_3000", f"ANALYZE TABLE {t}")
    spec = mysql_spec(mariadb, tmp_path, "snap-prog", t, snapshot="initial", chunk_rows=250,
                      max_rows_per_second=400)
    ray.get(controller.submit.remote(spec, {"PW": mariadb.password}))
    runner = CliRunner()
    # while the snapshot runs: tables, chunks, rows, rows/s and an ETA in `dbus status`

    def shown(prefix: str) -> str | None:
        text = status_json(runner, app, "snap-prog").get("snapshot") or ""
        return text if text.startswith(prefix) and "ETA -" not in text else None

    line = wait_for(lambda: shown("snapshot running"), what="snapshot progress in status", timeout=60)
    m = re.fullmatch(r"snapshot running: 0/1 tables, ([\d,]+) chunks, ([\d,]+) rows, ([\d,]+) rows/s, ETA ([\d,]+)s",
                     line)
    assert m, line
    chunks, rows, rate, eta = (int(g.replace(",", "")) for g in m.groups())
    assert 1 <= chunks <= 12 and 0 < rows < 3000
    assert 200 <= rate <= 600, rate  # the throttle, 400 rows/s
    assert 0 < eta <= 3000 / 200
    table = runner.invoke(app, ["status", "snap-prog"]).stdout
    assert "SNAPSHOT" in table.splitlines()[0] and "snapshot running: 0/1 tables" in table
    # the `dbus run` live line, fed the reader's own status
    reader = ray.get_actor(actor_name("snap-prog", "reader"), namespace=NAMESPACE)
    out = io.StringIO()
    Progress(out)(ray.get(reader.status.remote()))
    assert re.search(r"\[snapshot running: 0/1 tables, [\d,]+ chunks, [\d,]+ rows, [\d,]+ rows/s, ETA [\d,-]+s?\]",
                     out.getvalue()), out.getvalue()
    # and once it is done
    done = wait_for(lambda: shown("snapshot done"), what="snapshot done", timeout=60)
    assert re.fullmatch(r"snapshot done: 1/1 tables, (1[23]) chunks, 3,000 rows, [\d,]+ rows/s", done), done
    progress = ray.get(controller.get.remote("snap-prog"))["status"]["snapshot"]
    assert progress["rows"] == 3000 and progress["eta_seconds"] == 0.0
    out = io.StringIO()
    Progress(out)(ray.get(reader.status.remote()))
    assert "snapshot" not in out.getvalue()  # the live line drops it once the snapshot is over
