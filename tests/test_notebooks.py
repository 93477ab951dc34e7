"""Every lesson notebook is committed clean and can be driven by papermill."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
ASSIGNMENTS = sorted((Path(__file__).parents[1] / "grading" / "source").glob("*/*.ipynb"))


def test_there_are_lessons():
    assert [nb.stem for nb in NOTEBOOKS][:1] == ["00_environment"]


@pytest.mark.parametrize("path", NOTEBOOKS + ASSIGNMENTS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code_cells = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    dirty = [i for i, cell in code_cells if cell.outputs or cell.execution_count]
    assert not dirty, f"{path.name}: clear outputs of cells {dirty} (jupyter nbconvert --clear-output --inplace)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_has_one_parameters_cell_first_code_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    first_code = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    assert tagged == [first_code], f"{path.name}: the first code cell must be the only one tagged 'parameters'"
