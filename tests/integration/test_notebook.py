"""The example notebook runs top to bottom (nbclient) against a private dev stack and its own local Ray; its
results are read from the cells tagged `delivered`, `ops` and `updates`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[2] / "examples" / "debugging.ipynb"


def result(nb: Any, tag: str) -> str:
    """The text of the last output of the one code cell tagged `tag`."""
    cells = [c for c in nb.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{len(cells)} code cells tagged {tag!r} in {NOTEBOOK.name}"
    return cells[0].outputs[-1]["data"]["text/plain"]


def test_example_notebook_runs(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert result(nb, "delivered") == "(115, 'stopped')"  # 100 inserts, 10 updates, 5 deletes
    ops = result(nb, "ops").split()
    assert ops[ops.index("delete") + 1] == "5" and ops[ops.index("insert") + 1] == "100"
    assert ops[ops.index("update") + 1] == "10"
    assert result(nb, "updates") == "(10, 'NEW', 'PAID')"
