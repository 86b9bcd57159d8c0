"""The `dbus` command.

Exit codes: 0 success; 1 the pipeline failed while running; 2 bad input (config, arguments);
3 a component could not be started or reached (Ray, MariaDB, broker).

Commands import what needs Ray or the dev stack (`client`, `pipeline`, `devstack`, `demo`, the controller)
when they run, so `dbus validate`, `dbus plugins` and `--help` start without loading Ray.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer

from dbus_ray import registry
from dbus_ray.cli_run import Progress, StopSignals, finite, hide_forwarded_failure
from dbus_ray.config import ConfigError, PipelineConfig, load_config, redact
from dbus_ray.constants import CONTROLLER_NAME
from dbus_ray.dag import as_svg, as_text
from dbus_ray.errors import DbusError
from dbus_ray.model import dumps

app = typer.Typer(add_completion=False, no_args_is_help=True, help="dbus-ray: a change-data-capture bus on Ray.")
dev_app = typer.Typer(no_args_is_help=True, help="A private MariaDB (binlog on) and Apache Kafka broker (KRaft).")
app.add_typer(dev_app, name="dev")

EXIT_FAILED, EXIT_INPUT, EXIT_UNAVAILABLE = 1, 2, 3
DEV_STATE = Path(os.path.expanduser("~/.dbus/dev"))


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def load(path: Path) -> PipelineConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc), EXIT_INPUT)
        raise  # unreachable


@app.command()
def validate(file: Path = typer.Argument(..., help="pipeline YAML file")) -> None:
    """Check a pipeline file; print a one-line error naming the key when something is wrong."""
    cfg = load(file)
    sinks = ", ".join(f"{s.name} ({s.type})" for s in cfg.sinks)
    typer.echo(f"{file}: ok: pipeline {cfg.name}, source {cfg.source.type}, sinks {sinks}")


@app.command()
def run(
    file: Path = typer.Argument(..., help="pipeline YAML file"),
    address: str | None = typer.Option(None, help="Ray address (default: $RAY_ADDRESS, else the cluster of the "
                                       "last `ray start` here, else a new local Ray)"),
    until_caught_up: bool = typer.Option(
        False, "--until-caught-up", help="stop once the source reached where it was at start and all is delivered"
    ),
    max_rows: int | None = typer.Option(None, "--max-rows", help="stop after reading this many rows"),
    output: str = typer.Option("table", help="final status as table or json"),
) -> None:
    """Run one pipeline in the foreground; Ctrl-C or SIGTERM stops it cleanly with a final checkpoint."""
    cfg = load(file)
    from dbus_ray.client import use_ray_token
    from dbus_ray.pipeline import connect_ray, run_pipeline

    check_ray_address(address)
    use_ray_token()
    try:
        connect_ray(address)
    except Exception as exc:  # noqa: BLE001 - shown to the user in one line
        fail(f"cannot start or reach Ray{' at ' + address if address else ''}: {exc}", EXIT_UNAVAILABLE)
    stop = StopSignals(cfg.name)  # after ray.init, which sets its own SIGTERM handler
    hide_forwarded_failure(cfg.name)
    if finite(cfg):
        until_caught_up = True  # a source with an end: done once every row of it is delivered
    progress = Progress()
    try:
        final = run_pipeline(cfg, max_rows=max_rows, until_caught_up=until_caught_up, on_progress=progress,
                             should_stop=stop.requested.is_set)
    except DbusError as exc:
        fail(str(exc), EXIT_FAILED)
        return
    progress.end(final)
    failed = final["state"] == "failed"
    show({k: v for k, v in final.items() if not (failed and k == "error")}, output)  # the error: once, below
    if failed:
        fail(f"pipeline {cfg.name} failed: {final['error']}", EXIT_FAILED)


def show(status: dict[str, Any], output: str) -> None:
    if output == "json":
        typer.echo(redact(json.dumps(status, default=str)))
        return
    for key, value in status.items():
        typer.echo(redact(f"{key:>20}: {value}"))


def check_ray_address(address: str | None) -> None:
    """Fail at once when the Ray address to use has nothing listening: `ray.init` would otherwise retry for
    minutes. The address is --address, else $RAY_ADDRESS, else the one the last `ray start` on this machine
    wrote to Ray's cluster file (stale once that head crashed). Nothing to check when this process is
    already connected (a notebook or a test that called `ray.init`): that connection is used."""
    import socket

    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or ""
    origin = ""
    if not target:
        target, cluster_file = last_cluster_address()
        origin = f" (the address of the last `ray start` here, read from {cluster_file})" if target else ""
    host, sep, port = target.rpartition(":")
    if not sep or "://" in target or not host or not port.isdigit():
        return  # "auto", "local", ray://...: Ray answers those quickly
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        fail(f"no Ray cluster at {target}{origin}: nothing answers on {host}:{port} ({why}); start one with "
             "`ray start --head`, or fix --address / RAY_ADDRESS", EXIT_UNAVAILABLE)


def last_cluster_address() -> tuple[str, str]:
    """The GCS address in Ray's cluster file (`$RAY_TMPDIR/ray/ray_current_cluster`) and the file's path;
    "" when there is none."""
    try:
        from ray._common.utils import get_ray_address_file

        path = get_ray_address_file(None)
        return Path(path).read_text().strip(), path
    except (ImportError, OSError):
        return "", ""


def bus(address: str | None) -> Any:
    from dbus_ray.client import connect

    check_ray_address(address)
    try:
        return connect(address)
    except DbusError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)


def call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except DbusError as exc:
        fail(str(exc), EXIT_INPUT)
    except ConfigError as exc:
        fail(str(exc), EXIT_INPUT)


def print_rows(rows: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        typer.echo(redact(json.dumps(rows, default=str)))
        return
    if not rows:
        typer.echo("(none)")
        return
    columns = list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        typer.echo(redact("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    text = str(value)
    return text[:12] if len(text) == 56 and all(ch in "0123456789abcdef" for ch in text) else text  # node ids


ADDRESS = typer.Option(None, "--address", help="Ray address (default: $RAY_ADDRESS, else the local cluster)")
OUTPUT = typer.Option("table", "--output", "-o", help="table or json")


@app.command()
def submit(
    file: Path = typer.Argument(..., help="pipeline YAML file"),
    watch: bool = typer.Option(False, "--watch", help="keep running and re-submit when the file changes"),
    address: str | None = ADDRESS,
) -> None:
    """Hand a pipeline to the cluster's controller (create, or update when the file changed)."""
    cfg = load(file)
    b = bus(address)
    record = call(b.submit, file)
    typer.echo(f"pipeline {cfg.name}: submitted (version {record['version']}, state {record['state']})")
    if record.get("desired") in ("paused", "stopped"):  # submit never restarts what an operator stopped
        typer.echo(f"pipeline {cfg.name} is {record['desired']}: `dbus resume {cfg.name}` runs it")
    if not watch:
        return
    mtime = file.stat().st_mtime
    typer.echo(f"watching {file} (Ctrl-C to stop watching; the pipeline keeps running)")
    try:
        while True:
            time.sleep(1)
            now = file.stat().st_mtime
            if now == mtime:
                continue
            mtime = now
            try:
                record = b.submit(file)
                typer.echo(f"pipeline {cfg.name}: reloaded (version {record['version']})")
            except (ConfigError, DbusError) as exc:
                typer.echo(f"error: {redact(str(exc))} (kept the running version)", err=True)
    except KeyboardInterrupt:
        pass


@app.command("list")
def list_(
    project: str | None = typer.Option(None, help="only this project's pipelines"),
    address: str | None = ADDRESS,
    output: str = OUTPUT,
) -> None:
    """Pipelines known to the controller."""
    rows = call(bus(address).rows, project)
    print_rows([{k: r[k] for k in ("name", "project", "state", "node", "version", "error")} for r in rows], output)


@app.command()
def status(
    pipeline: str | None = typer.Argument(None, help="one pipeline (default: all)"),
    address: str | None = ADDRESS,
    output: str = OUTPUT,
) -> None:
    """State, node, rows, lag, checkpoint and last error of each pipeline."""
    rows = call(bus(address).rows)
    if pipeline is not None:
        rows = [r for r in rows if r["name"] == pipeline]
        if not rows:
            fail(f"no pipeline named {pipeline!r}", EXIT_INPUT)
    print_rows(rows, output)


WAITED_STATE = {"pause": "paused", "resume": "running", "stop": "stopped"}


def _lifecycle(action: str):
    def command(
        pipeline: str = typer.Argument(...),
        wait: bool = typer.Option(False, "--wait", help="wait until the pipeline is in the state asked for"),
        timeout: float = typer.Option(120.0, "--timeout", help="seconds --wait waits at most"),
        address: str | None = ADDRESS,
    ) -> None:
        b = bus(address)
        result = call(getattr(b, action), pipeline)  # answers at once: the controller acts on it next
        if not wait or action == "remove":
            typer.echo(f"pipeline {pipeline}: {action} requested" + (f" (state {result['state']})" if result else ""))
            return
        wait_for_state(b, pipeline, WAITED_STATE[action], timeout, since=(result or {}).get("updated", 0.0))

    command.__doc__ = {"pause": "Stop a pipeline's actors with a final checkpoint; resume continues from it.",
                       "resume": "Run a paused or stopped pipeline again from its checkpoint.",
                       "stop": "Stop a pipeline (final checkpoint); it stays listed.",
                       "remove": "Stop a pipeline and forget it."}[action]
    return command


def wait_for_state(b: Any, pipeline: str, wanted: str, timeout: float, since: float = 0.0) -> None:
    """Poll the controller until `pipeline` is `wanted` (exit 1 when it failed after the request, whose
    record was written at `since`; 3 on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        record = call(b.get, pipeline)
        if record["state"] == wanted:
            typer.echo(f"pipeline {pipeline}: {wanted}")
            return
        if record["state"] == "failed" and wanted == "running" and record["updated"] > since:
            fail(f"pipeline {pipeline} failed: {record.get('error')}", EXIT_FAILED)
        if time.monotonic() >= deadline:
            fail(f"pipeline {pipeline} is still {record['state']} after {timeout:g}s (asked for {wanted})",
                 EXIT_UNAVAILABLE)
        time.sleep(0.2)


for _action in ("pause", "resume", "stop", "remove"):
    app.command(_action)(_lifecycle(_action))


@app.command()
def rebalance(address: str | None = ADDRESS) -> None:
    """Re-place pipelines over the live nodes now (two-phase: old owner stops, then new starts)."""
    call(bus(address).rebalance)
    typer.echo("rebalanced")


@app.command()
def participants(address: str | None = ADDRESS, output: str = OUTPUT) -> None:
    """Ray nodes, their capacity and the pipelines on each."""
    print_rows(call(bus(address).participants), output)


@app.command()
def peek(
    pipeline: str = typer.Argument(...),
    n: int = typer.Option(20, "-n", help="how many of the newest row changes"),
    address: str | None = ADDRESS,
) -> None:
    """The newest row changes a running pipeline read, one JSON line each."""
    for row in call(bus(address).peek_rows, pipeline, n):
        typer.echo(redact(dumps(row)))


@app.command()
def snapshot(
    pipeline: str = typer.Argument(...),
    tables: list[str] = typer.Argument(..., help="tables to read again, as db.table"),
    where: str | None = typer.Option(None, "--where", help="only the rows this SQL condition selects"),
    address: str | None = ADDRESS,
) -> None:
    """Backfill: read TABLEs of a running pipeline again (op: read rows between markers) while it streams."""
    asked = call(bus(address).backfill, pipeline, tables, where)
    typer.echo(f"pipeline {pipeline}: backfill of {', '.join(asked['tables'])} asked for"
               + (f" (where {where})" if where else "") + f", about {asked['rows_estimate']:,} rows")


checkpoint_app = typer.Typer(no_args_is_help=True, help="Show or set a pipeline's checkpoint.")
app.add_typer(checkpoint_app, name="checkpoint")


@checkpoint_app.command("show")
def checkpoint_show(pipeline: str = typer.Argument(...), address: str | None = ADDRESS) -> None:
    """The checkpoint a pipeline resumes from."""
    saved = call(bus(address).checkpoint, pipeline)
    typer.echo(json.dumps(saved) if saved else f"pipeline {pipeline}: no checkpoint yet")


@checkpoint_app.command("set")
def checkpoint_set(
    pipeline: str = typer.Argument(...),
    position: str = typer.Argument(..., help="mysql: FILE:OFFSET of a transaction start; mock: row number"),
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    address: str | None = ADDRESS,
) -> None:
    """Make a paused or stopped pipeline resume from POSITION (rows before it are skipped, after it re-sent)."""
    if not yes and not typer.confirm(f"Set the checkpoint of {pipeline} to {position}?"):
        raise typer.Exit(EXIT_INPUT)
    saved = call(bus(address).set_checkpoint, pipeline, position)
    typer.echo(f"pipeline {pipeline}: checkpoint set to {json.dumps(saved['source'])}")


@app.command()
def dag(
    pipeline: str = typer.Argument(...),
    svg: Path | None = typer.Option(None, "--svg", help="also write the picture to this SVG file"),
    address: str | None = ADDRESS,
) -> None:
    """The pipeline's stages and sinks with live rows/s (text, and an SVG picture with --svg)."""
    cfg, flow = call(bus(address).flow, pipeline)
    typer.echo(as_text(cfg, flow))
    if svg is not None:
        svg.write_text(as_svg(cfg, flow))
        typer.echo(f"picture: {svg}")


@app.command()
def controller(
    strategy: str = typer.Option("sticky", help="placement when it is created: sticky, round_robin, weighted"),
    state: str | None = typer.Option(
        None, help="durable state that outlives the cluster, used when it is created: file:///shared/dir or "
        "kafka://host:port/topic (a new cluster's controller pointed at it resumes every pipeline)"),
    address: str | None = ADDRESS,
) -> None:
    """Start the cluster's controller if it is not running (ray up runs this on the head) and show it."""
    from dbus_ray.actors.controller import gcs_warning, start_controller
    from dbus_ray.client import join_cluster

    check_ray_address(address)
    try:
        info = start_controller(strategy, state, join=lambda: join_cluster(address))
    except ValueError as exc:  # a bad --state, an unreachable one, or not the running controller's
        fail(str(exc), EXIT_INPUT)
    except DbusError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    if warning := gcs_warning(info.get("gcs_storage")):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"controller {CONTROLLER_NAME}: pid {info['pid']}, node {info['node'][:12]}, "
               f"strategy {info['strategy']}, state {info.get('state') or 'GCS only'}")

@app.command()
def plugins(output: str = OUTPUT) -> None:
    """List the plugins: source, sink and filter operator types and checkpoint stores, with their options
    and optional abilities (the table leaves the options out: `-o json` has them)."""
    rows = registry.listing()
    if output != "json":
        rows = [{k: v for k, v in row.items() if k != "options"} for row in rows]
    print_rows(rows, output)


@app.command("config-docs")
def config_docs(
    output: Path | None = typer.Option(None, "--output", help="write here (default: print)"),
    check: bool = typer.Option(False, "--check", help="exit 1 when --output differs from what would be written"),
) -> None:
    """The reference of every config key (type, default, meaning), generated from the config classes."""
    from dbus_ray.config_docs import render

    text = render()
    if output is None:
        typer.echo(text, nl=False)
    elif check:
        if not output.exists() or output.read_text() != text:
            fail(f"{output} is not what the config classes generate: run `dbus config-docs --output {output}`",
                 EXIT_FAILED)
        typer.echo(f"{output}: up to date")
    else:
        output.write_text(text)
        typer.echo(f"{output}: written")


@dev_app.command("up")
def dev_up() -> None:
    """Start the dev stack in the background and print its addresses."""
    from dbus_ray import devstack

    try:
        state = devstack.dev_up(DEV_STATE)
    except Exception as exc:  # noqa: BLE001
        fail(f"dev stack did not start: {exc}", EXIT_UNAVAILABLE)
    print_dev(state)


@dev_app.command("status")
def dev_status() -> None:
    """Show whether the dev stack runs, and where (exit code 3 when it or a part of it is down)."""
    from dbus_ray import devstack

    state = devstack.dev_status(DEV_STATE)
    if not state:
        typer.echo("dev stack: not running")
        raise typer.Exit(EXIT_UNAVAILABLE)
    print_dev(state)
    down = [key for key in ("mariadb", "broker")
            if state.get(key) and not (state[key].get("alive") and state[key].get("answering"))]
    if down:
        fail(f"dev stack: {' and '.join(down)} DOWN: `dbus dev down` then `dbus dev up` starts it again",
             EXIT_UNAVAILABLE)


@dev_app.command("down")
def dev_down() -> None:
    """Stop the dev stack and remove its files."""
    from dbus_ray import devstack

    typer.echo("dev stack: stopped" if devstack.dev_down(DEV_STATE) else "dev stack: was not running")


def print_dev(state: dict[str, Any]) -> None:
    from dbus_ray.devstack import redacted

    state = redacted(state)
    db, broker = state.get("mariadb") or {}, state.get("broker") or {}

    def health(part: dict[str, Any]) -> str:
        return "running" if part.get("alive") and part.get("answering") else "DOWN"

    if db:
        typer.echo(f"mariadb  {health(db):8} {db.get('dsn')}  datadir {db.get('datadir')}")
    if broker:
        typer.echo(f"broker   {health(broker):8} {broker.get('bootstrap')}  Apache Kafka {broker.get('version')} "
                   f"(KRaft), started in {broker.get('start_seconds')} s")
    typer.echo(f"state    {state.get('state_file')} (holds the dev password)")


@app.command()
def demo(
    rows: int = typer.Option(50_000, help="rows the demo writes"),
    address: str | None = typer.Option(None, help="Ray address (default: a local Ray)"),
) -> None:
    """A throwaway end-to-end run on local Ray; see README."""
    from dbus_ray.demo import run_demo

    try:
        code = run_demo(rows=rows, address=address)
    except DbusError as exc:
        fail(str(exc), EXIT_FAILED)
        return
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
