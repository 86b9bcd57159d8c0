"""The example notebook runs top to bottom (nbclient) against a private dev stack and its own local Ray."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[2] / "examples" / "debugging.ipynb"


def test_example_notebook_runs(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    delivered = outputs[3][-1]["data"]["text/plain"]
    assert delivered == "(115, 'stopped')"  # 100 inserts, 10 updates, 5 deletes
    ops = outputs[4][-1]["data"]["text/plain"].split()
    assert ops[ops.index("delete") + 1] == "5" and ops[ops.index("insert") + 1] == "100"
    assert ops[ops.index("update") + 1] == "10"
    assert outputs[5][-1]["data"]["text/plain"] == "(10, 'NEW', 'PAID')"
