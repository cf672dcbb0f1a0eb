"""The notebooks in docs/notebooks run top to bottom on the organism pair (nbclient)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "docs" / "notebooks").glob("*.ipynb"))


def _organism_available() -> bool:
    from mechit.organism.weights import model_dir

    return all((model_dir(name) / "config.json").is_file() for name in ("base", "tuned"))


pytestmark = [
    pytest.mark.notebooks,
    pytest.mark.skipif(not _organism_available(), reason="the organism weights are not built"),
]


def test_the_three_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_heads", "03_ffn"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    assert all(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_with_their_outputs(path):
    """A reader sees the results without running anything: every code cell is stored executed,
    and the notebook shows figures or tables (regenerate with scripts/notebooks.py)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.get("execution_count") for cell in code)
    outputs = [o for cell in code for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    rich = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")
            and ({"image/png", "text/html"} & set(o.get("data", {})))]
    assert rich, f"{path.name} holds no figure, table or view"
