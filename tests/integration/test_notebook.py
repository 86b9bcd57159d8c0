"""The example notebook runs top to bottom (nbclient) against a private dev stack, its own local Ray and the bus'
controller, and tells its debugging story: a wrong value downstream -> the history of the row -> the transaction
-> where it went in Kafka. Its results are read from the cells' tags; the expected values come from the SQL the
notebook runs (order 7 is customer-2's, paid, 17.50 until the discount job's transaction zeroes customer-2's
orders 2, 7, 12 and 17 and records its run) and from murmur2 of the message key. Then a live Delta Lake copy of
the orders, read with pandas while 20 more orders arrive, ends equal to MariaDB's SELECT."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

from tests.support.topics import partition_of

NOTEBOOK = Path(__file__).parents[2] / "examples" / "debugging.ipynb"
ZEROED = {"id": 7, "customer": "customer-2", "status": "PAID", "amount": "0.00"}


def output(nb: Any, tag: str, mime: str = "text/plain") -> Any:
    """The `mime` data of the last output of the one code cell tagged `tag`."""
    cells = [c for c in nb.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{len(cells)} code cells tagged {tag!r} in {NOTEBOOK.name}"
    return cells[0].outputs[-1]["data"][mime]


def value(nb: Any, tag: str) -> Any:
    return ast.literal_eval(output(nb, tag))


def test_example_notebook_tells_the_debugging_story(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    kept = {tag for c in nb.cells for tag in c.metadata.get("tags", []) if c.get("outputs")}
    assert {"history", "transaction", "trace", "dag", "lag"} <= kept  # the committed notebook keeps its outputs
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    streams = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert not [s for s in streams if "Error" in s or "Traceback" in s], streams
    assert value(nb, "delivered") == 29  # 20 inserts, 3 payments, 4 discounts, 1 job run, 1 shipment
    assert value(nb, "downstream") == "0.00"
    assert value(nb, "ops") == ["insert", "update", "update"]
    txid, before, after = value(nb, "culprit")
    assert json.loads(before) == {**ZEROED, "amount": "17.50"} and json.loads(after) == ZEROED
    assert "discount-job" in output(nb, "transaction")
    html = output(nb, "transaction", "text/html")
    assert all(f"{{&quot;id&quot;:{i}}}" in html or f'{{"id":{i}}}' in html for i in (2, 7, 12, 17)), html
    read, acknowledged, topic, partition, found = value(nb, "trace_summary")
    assert (read, acknowledged, topic, found) == (True, True, "shop.orders", True)
    assert partition == partition_of(b'{"id":7}', 3)
    assert value(nb, "message") == ZEROED
    assert output(nb, "select") == "((7, 'customer-2', 'PAID', Decimal('0.00')),)"  # MariaDB's own SELECT
    assert output(nb, "dag", "image/svg+xml").startswith("<svg")
    assert output(nb, "lag", "image/png")
    # the live Delta copy, read with pandas while 20 more orders arrive: whole commits, growing, then equal
    seen = value(nb, "lake_reads")
    assert len(seen) == 20 and seen == sorted(seen) and 20 <= seen[0] and seen[-1] <= 40 and len(set(seen)) > 1, seen
    assert value(nb, "lake_equal") is True
    lake = output(nb, "lake").split("\n")
    assert lake[2].split() == ["7", "customer-2", "PAID", "0.00"] and lake[3].split() == ["40", "customer-0", "NEW",
                                                                                          "50.50"], lake
