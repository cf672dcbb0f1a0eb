"""Execute the notebooks in docs/notebooks and store them with their outputs (figures, tables, views).

A reader sees the results on the page without running anything; tests/integration/
test_notebooks.py checks that the stored notebooks hold outputs and that they still run.

    .venv/bin/python scripts/notebooks.py            # all notebooks
    .venv/bin/python scripts/notebooks.py 02_heads   # one
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"


def execute(path: Path) -> None:
    """Run ``path`` top to bottom in a temporary working directory and write it back with outputs."""
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as work:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": work}}).execute()
    notebook.metadata.pop("widgets", None)
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, tmp)
    os.replace(tmp, path)  # atomic: a failed run leaves the stored notebook as it was
    print(f"{path.name}: {sum(c.cell_type == 'code' for c in notebook.cells)} code cells executed")


def main(names: list[str]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    for path in paths:
        if not names or path.stem in names:
            execute(path)


if __name__ == "__main__":
    main(sys.argv[1:])
