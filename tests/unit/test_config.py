"""Pipeline config: every kind of mistake gets its exact one-line message naming file and key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dbus_ray.cli import app
from dbus_ray.config import ConfigError, load_config, parse_config, redact

BASE = {"name": "p", "source": {"type": "mock"}, "sinks": [{"name": "a", "type": "jsonl", "path": "/tmp/x"}]}


def error_of(change, env=None) -> str:
    raw = copy.deepcopy(BASE)
    change(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "configs/x.yaml", env or {})
    return str(info.value)


CASES = {
    "missing field": (
        lambda c: c["sinks"][0].pop("path"),
        "configs/x.yaml: sinks[0].path: field required",
    ),
    "wrong type": (
        lambda c: c["source"].update(rows="ten"),
        "configs/x.yaml: source.rows: expected an integer, got str 'ten'",
    ),
    "bool is not an integer": (
        lambda c: c["source"].update(rows=True),
        "configs/x.yaml: source.rows: expected an integer, got true",
    ),
    "unknown source type": (
        lambda c: c["source"].update(type="oracle"),
        "configs/x.yaml: source.type: unknown source type 'oracle' (known: binlog_files, kafka, mock, mysql)",
    ),
    "unknown sink type": (
        lambda c: c["sinks"][0].update(type="s3"),
        "configs/x.yaml: sinks[0].type: unknown sink type 's3' (known: ",
    ),
    "unknown top-level key": (
        lambda c: c.update(colour="red"),
        "configs/x.yaml: colour: unknown key (allowed: checkpoint, data_dir, filters, flow, name, project, "
        "sinks, source)",
    ),
    "unknown plugin key": (
        lambda c: c["sinks"][0].update(colur="red"),
        "configs/x.yaml: sinks[0].colur: unknown key (allowed: fsync, match, max_bytes, name, path, type)",
    ),
    "bad pattern": (
        lambda c: c["sinks"][0].update(match=["shop"]),
        "configs/x.yaml: sinks[0].match[0]: bad pattern 'shop': expected db.table (globs allowed, e.g. shop.*)",
    ),
    "unclosed bracket in pattern": (
        lambda c: c.update(filters=[{"type": "select", "include": ["shop.[ab"]}]),
        "configs/x.yaml: filters[0].include[0]: bad pattern 'shop.[ab': unclosed '['",
    ),
    "unset env var": (
        lambda c: c["sinks"][0].update(path="${OUT_DIR}/x.jsonl"),
        "configs/x.yaml: sinks[0].path: environment variable OUT_DIR is not set",
    ),
    "bad DSN scheme": (
        lambda c: c.update(source={"type": "mysql", "dsn": "postgres://u:secret@h:5432"}),
        "configs/x.yaml: source.dsn: bad DSN scheme 'postgres': expected mysql://user:password@host:port",
    ),
    "bad DSN port": (
        lambda c: c.update(source={"type": "mysql", "dsn": "mysql://u:secret@h:99999"}),
        "configs/x.yaml: source.dsn: bad DSN port: expected mysql://user:password@host:port",
    ),
    "duplicate sink name": (
        lambda c: c["sinks"].append({"name": "a", "type": "null"}),
        "configs/x.yaml: sinks[1].name: duplicate sink name 'a' (also sinks[0])",
    ),
    "missing name": (lambda c: c.pop("name"), "configs/x.yaml: name: field required"),
    "bad pipeline name": (
        lambda c: c.update(name="bad name"),
        "configs/x.yaml: name: pipeline name 'bad name' must be 1-63 letters, digits, '_', '.' or '-'",
    ),
    "no sinks": (lambda c: c.update(sinks=[]), "configs/x.yaml: sinks: at least one sink is required"),
    "unknown placement": (
        lambda c: c.update(flow={"placement": "packed"}),
        "configs/x.yaml: flow.placement: must be one of auto, fused, split, spread, shared, not 'packed'",
    ),
    "host capacity below one": (
        lambda c: c.update(flow={"placement": "shared", "host_capacity": 0}),
        "configs/x.yaml: flow.host_capacity: must be at least 1",
    ),
    "pipeline named like the host actors": (
        lambda c: c.update(name="host"),
        "configs/x.yaml: name: 'host' is reserved (host actors are named dbus:host:<n>)",
    ),
    "flow bound below batch": (
        lambda c: c.update(flow={"max_rows_in_flight": 10}),
        "configs/x.yaml: flow.max_rows_in_flight: must be at least read_batch_rows (20000)",
    ),
    "unknown checkpoint store": (
        lambda c: c.update(checkpoint={"store": "zk"}),
        "configs/x.yaml: checkpoint.store: unknown checkpoint store 'zk' (known: ",
    ),
    "negative rate": (
        lambda c: c["source"].update(rate=-1),
        "configs/x.yaml: source.rate: must not be negative",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_message(case: str) -> None:
    change, expected = CASES[case]
    message = error_of(change)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_placements() -> None:
    def placement(flow: dict, source: dict | None = None) -> str:
        return parse_config({**BASE, "flow": flow, "source": {"type": "mock", **(source or {})}}, "x", {}).placement

    assert placement({}) == "fused"
    assert placement({"placement": "shared"}) == "shared"
    mysql = {"type": "mysql", "dsn": "mysql://u:p@db:3306"}
    assert placement({}, {**mysql, "snapshot_parallelism": 2}) == "spread"  # the snapshot's workers beside the stages
    assert placement({}, {**mysql, "decoders": 2}) == "fused"  # decoders are processes of their own
    assert placement({"placement": "spread"}, {**mysql, "decoders": 2}) == "spread"
    assert parse_config({**BASE, "flow": {"placement": "shared"}}, "x", {}).flow.host_capacity == 10


def test_password_never_in_errors() -> None:
    message = error_of(lambda c: c.update(source={"type": "mysql", "dsn": "postgres://u:s3cr3t@h:5432"}))
    assert "s3cr3t" not in message


def test_env_interpolation_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\n"
        "source: {type: mysql, dsn: 'mysql://dbus:${PW}@127.0.0.1:3307'}\n"
        "sinks:\n  - {name: out, type: jsonl, path: '${OUT:-/tmp/default.jsonl}'}\n"
    )
    cfg = load_config(path, env={"PW": "p@ss:word"})
    assert cfg.source.options.dsn == "mysql://dbus:p@ss:word@127.0.0.1:3307"
    assert cfg.sinks[0].options.path == "/tmp/default.jsonl"
    assert cfg.sinks[0].match == ["*.*"]
    assert cfg.flow.read_batch_rows == 20_000 and cfg.checkpoint.store == "file"


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: p\nsource: {type: mock\nsinks: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line 3: YAML syntax error")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"^nope\.yaml: cannot read: No such file or directory$"):
        load_config("nope.yaml")


def test_redact_hides_passwords() -> None:
    assert redact("dsn mysql://dbus:hunter2@h:3306 failed") == "dsn mysql://dbus:***@h:3306 failed"
    assert redact("no secrets here") == "no secrets here"


def test_every_example_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_MYSQL_PASSWORD", "x")
    files = sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml"))
    assert files, "configs/ holds no example"
    for path in files:
        load_config(path)


def test_cli_validate() -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["validate", "configs/mock-jsonl.yaml"])
    assert good.exit_code == 0, good.output
    assert "ok: pipeline mock-jsonl" in good.output


def test_cli_validate_bad_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: p\nsource: {type: mock}\nsinks: [{name: a, type: kafkaa}]\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"error: {path}: sinks[0].type: unknown sink type 'kafkaa'" in result.output


def test_cli_plugins_lists_every_type() -> None:
    import json

    result = CliRunner().invoke(app, ["plugins", "-o", "json"])
    assert result.exit_code == 0, result.output
    listed = {(r["kind"], r["type"]) for r in json.loads(result.stdout)}
    assert {("source", "mock"), ("source", "mysql"), ("sink", "kafka"), ("sink", "jsonl"), ("sink", "null"),
            ("sink", "stdout")} <= listed
    operators = {"select", "filter", "regex", "rename", "drop_columns", "mask", "route", "split", "count"}
    assert {t for k, t in listed if k == "operator"} == operators
    assert {t for k, t in listed if k == "checkpoint store"} == {"delta", "file", "gcs", "kafka", "postgres"}
    by_type = {(r["kind"], r["type"]): r for r in json.loads(result.stdout)}
    assert by_type[("source", "mysql")]["abilities"] == ["supports_backfill", "reports_snapshot_progress"]
    assert by_type[("source", "mock")]["abilities"] == []
    assert by_type[("operator", "filter")]["options"] == ["expr"]
    assert by_type[("sink", "null")]["about"] == "counts rows and drops them (benchmarks, dry runs)"
    table = CliRunner().invoke(app, ["plugins"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == ["KIND", "TYPE", "ABOUT", "ABILITIES"]
    assert any(line.split()[:3] == ["checkpoint", "store", "gcs"] for line in table.stdout.splitlines())


@pytest.mark.parametrize("start, kind, value", [
    ("latest", "latest", None),
    ("earliest", "earliest", None),
    ("mysql-bin.000042:1234", "position", ("mysql-bin.000042", 1234)),
    ("0-1-100", "gtid", "0-1-100"),  # MariaDB domain-server-seq
    ("0-1-100,1-2-7", "gtid", "0-1-100,1-2-7"),
    ("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77", "gtid", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77"),  # MySQL
    ("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9, 4f11fa47-71ca-11e1-9e33-c80aa9429562:3", "gtid",
     "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9, 4f11fa47-71ca-11e1-9e33-c80aa9429562:3"),
])
def test_mysql_start_forms(start: str, kind: str, value: object) -> None:
    from dbus_ray.mysql.options import parse_start

    assert parse_start(start) == (kind, value)


@pytest.mark.parametrize("start", ["", "latest-ish", "binlog:abc", "0-1", "3e11fa47:1-7"])
def test_mysql_bad_start_is_refused(start: str) -> None:
    from dbus_ray.config import Invalid
    from dbus_ray.mysql.options import parse_start

    with pytest.raises(Invalid, match="bad start"):
        parse_start(start)
