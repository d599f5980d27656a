"""minivae.notebooks: percent scripts become nbformat-4 notebooks that run like the scripts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minivae import cli, notebooks

TUTORIALS_DIR = Path(__file__).resolve().parents[1] / "tutorials"
FAST_TUTORIAL = "02_backprop_by_hand"
RUN_TIMEOUT_SECONDS = 120

SCRIPT = """\
# %% [markdown]
# # A title
#
# Some *text*, with `code`.
#not a heading: no space after the hash

# %%
import math
x = math.sqrt(4)


# %% Cell with a title
print(x)
# a comment stays a comment

# %% [markdown]
# ## Second text

# %%

# %% [md]
# short tag
"""


def code_of(cell):
    return "".join(cell["source"])


def test_cells_have_the_types_and_sources_of_the_script():
    notebook = notebooks.percent_to_notebook(SCRIPT)
    cells = notebook["cells"]
    assert [cell["cell_type"] for cell in cells] == ["markdown", "code", "code", "markdown", "markdown"]
    assert code_of(cells[0]) == ("# A title\n\nSome *text*, with `code`.\n"
                                 "#not a heading: no space after the hash")
    assert code_of(cells[1]) == "import math\nx = math.sqrt(4)"          # trailing blank lines dropped
    assert code_of(cells[2]) == "print(x)\n# a comment stays a comment"  # code comments are kept
    assert code_of(cells[3]) == "## Second text"
    assert code_of(cells[4]) == "short tag"                             # the empty code cell is gone


def test_notebook_is_nbformat_4_json():
    notebook = notebooks.percent_to_notebook(SCRIPT)
    assert json.loads(json.dumps(notebook)) == notebook
    assert set(notebook) == {"cells", "metadata", "nbformat", "nbformat_minor"}
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 5)
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        expected = {"cell_type", "id", "metadata", "source"}
        if cell["cell_type"] == "code":
            expected |= {"execution_count", "outputs"}
            assert cell["execution_count"] is None and cell["outputs"] == []
        assert set(cell) == expected
        assert all(line.endswith("\n") for line in cell["source"][:-1])
        assert not cell["source"][-1].endswith("\n")


def test_text_before_the_first_marker_becomes_a_code_cell():
    cells = notebooks.percent_to_notebook("import os\n\n# %% [markdown]\n# Text\n")["cells"]
    assert [(cell["cell_type"], code_of(cell)) for cell in cells] == [("code", "import os"),
                                                                      ("markdown", "Text")]
    assert notebooks.percent_to_notebook("")["cells"] == []


def test_percent_to_notebook_rejects_a_path():
    with pytest.raises(TypeError, match="text must be a str"):
        notebooks.percent_to_notebook(TUTORIALS_DIR)


def test_every_tutorial_converts_without_losing_code():
    paths = sorted(TUTORIALS_DIR.glob(notebooks.TUTORIAL_PATTERN))
    assert paths
    for path in paths:
        text = path.read_text(encoding="utf-8")
        cells = notebooks.percent_to_notebook(text)["cells"]
        assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# ")
        code_lines = [line for cell in cells if cell["cell_type"] == "code"
                      for line in code_of(cell).splitlines() if line.strip()]
        script_lines, in_markdown = [], False
        for line in text.splitlines():
            if line.startswith("# %%"):
                in_markdown = "[markdown]" in line
            elif not in_markdown and line.strip():
                script_lines.append(line)
        assert code_lines == script_lines, f"{path.name}: code changed in conversion"


def test_write_notebooks_writes_one_notebook_per_tutorial(tmp_path):
    written = notebooks.write_notebooks(tmp_path / "out", tutorials_dir=TUTORIALS_DIR)
    stems = [path.stem for path in sorted(TUTORIALS_DIR.glob(notebooks.TUTORIAL_PATTERN))]
    assert [path.name for path in written] == [stem + ".ipynb" for stem in stems]
    for path in written:
        assert json.loads(path.read_text(encoding="utf-8"))["nbformat"] == 4


def test_the_tutorials_are_found_without_from():
    """In the checkout (editable install) or shipped in the package: either way, the same files."""
    found = notebooks.find_tutorials_dir()
    assert found in (TUTORIALS_DIR, Path(notebooks.__file__).resolve().parent / "tutorials")
    assert ([path.name for path in notebooks.tutorial_paths()]
            == [path.name for path in sorted(TUTORIALS_DIR.glob(notebooks.TUTORIAL_PATTERN))])


def test_tutorials_shipped_inside_the_package_are_preferred(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "minivae"
    (package / "tutorials").mkdir(parents=True)
    (package / "tutorials" / "01_first.py").write_text("# %% [markdown]\n# # First\n")
    (tmp_path / "site-packages" / "tutorials").mkdir()  # a stray folder next to the package
    monkeypatch.setattr(notebooks, "__file__", str(package / "notebooks.py"))
    assert notebooks.find_tutorials_dir() == package / "tutorials"


def test_missing_tutorials_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(notebooks, "__file__", str(tmp_path / "minivae" / "notebooks.py"))
    with pytest.raises(FileNotFoundError, match="--from"):
        notebooks.find_tutorials_dir()
    with pytest.raises(FileNotFoundError, match="holds no tutorial"):
        notebooks.write_notebooks(tmp_path / "out", tutorials_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_command_line_writes_the_notebooks(tmp_path, capsys):
    assert cli.main(["notebooks", str(tmp_path / "nb"), "--from", str(TUTORIALS_DIR)]) == 0
    assert (tmp_path / "nb" / f"{FAST_TUTORIAL}.ipynb").is_file()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as error:
        cli.main(["notebooks", str(tmp_path / "nb2"), "--from", str(tmp_path / "nowhere")])
    assert error.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


RUN_NOTEBOOK = """\
import json, sys
notebook = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), cell["id"], "exec"), namespace)
"""


def run_quick(args, figures, cwd):
    env = dict(os.environ, MINIVAE_QUICK="1", MPLBACKEND="Agg", MINIVAE_FIGURES=str(figures))
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout.replace(str(figures), "FIGURES")


def test_notebook_run_cell_by_cell_reproduces_the_script(tmp_path):
    """The notebook of tutorial 02, its code cells exec'd in order in one namespace, prints exactly
    what the script prints and writes the same figures."""
    notebook = notebooks.write_notebooks(tmp_path / "nb", tutorials_dir=TUTORIALS_DIR)
    notebook = next(path for path in notebook if path.stem == FAST_TUTORIAL)
    script_out = run_quick([str(TUTORIALS_DIR / f"{FAST_TUTORIAL}.py")], tmp_path / "fig_script", tmp_path)
    notebook_out = run_quick(["-c", RUN_NOTEBOOK, str(notebook)], tmp_path / "fig_notebook", tmp_path)
    assert "figure: FIGURES" in script_out
    assert notebook_out == script_out
    script_figures = sorted(p.name for p in (tmp_path / "fig_script").rglob("*.png"))
    notebook_figures = sorted(p.name for p in (tmp_path / "fig_notebook").rglob("*.png"))
    assert notebook_figures == script_figures and script_figures


# --------------------------------------------------------------------------------------------------
# The notebooks executed in a real Jupyter kernel, as Jupyter, JupyterLab, VS Code and Colab run them
# --------------------------------------------------------------------------------------------------

KERNEL_TIMEOUT_SECONDS = 300  # per cell; a quick-mode cell takes seconds, numba's first compile more
SHOW_CALL = "course.show("     # the helper that sends a figure to the notebook
SAVE_CALL = "course.figure_path("  # every figure a tutorial makes is saved through this
TUTORIAL_STEMS = [path.stem for path in sorted(TUTORIALS_DIR.glob(notebooks.TUTORIAL_PATTERN))]


def kernel_runner():
    """nbclient and nbformat, or skip: they are test extras (pip install -e ".[test]")."""
    missing = []
    for name in ("nbclient", "nbformat", "ipykernel"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the notebooks cannot be executed in a Jupyter "
                    f"kernel here (pip install -e \".[test]\" installs them)")
    import nbclient
    import nbformat
    return nbclient, nbformat


def figure_cells(notebook):
    """The code cells that make a figure, found from their source: those that save one."""
    return [cell for cell in notebook.cells
            if cell.cell_type == "code" and SAVE_CALL in "".join(cell.source)]


def png_outputs(cell):
    return [output for output in cell.get("outputs", [])
            if output.get("output_type") in ("display_data", "execute_result")
            and "image/png" in output.get("data", {})]


@pytest.mark.parametrize("stem", TUTORIAL_STEMS)
def test_notebook_in_a_kernel_shows_every_figure(stem, tmp_path, monkeypatch):
    """Export the tutorial with `minivae notebooks`, execute it in an ipykernel in quick mode, and
    find one PNG image among the outputs of every cell that makes a figure (and none elsewhere)."""
    nbclient, nbformat = kernel_runner()
    assert cli.main(["notebooks", str(tmp_path / "nb"), "--from", str(TUTORIALS_DIR)]) == 0
    path = tmp_path / "nb" / f"{stem}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    expected = figure_cells(notebook)
    assert expected, f"{stem} makes no figure"

    workdir = tmp_path / "cwd"
    workdir.mkdir()
    # The kernel is a child process: it inherits this environment. MPLBACKEND is left as Jupyter
    # leaves it (the kernel's inline backend), not the Agg of the test run.
    monkeypatch.setenv("MINIVAE_QUICK", "1")
    monkeypatch.delenv("MINIVAE_SIZE", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("MINIVAE_FIGURES", str(tmp_path / "figures"))
    client = nbclient.NotebookClient(notebook, timeout=KERNEL_TIMEOUT_SECONDS, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()

    for cell in expected:
        assert SHOW_CALL in "".join(cell.source), (
            f"{stem}, cell {cell.id} saves a figure but does not show it with course.show(fig)")
        images = png_outputs(cell)
        texts = [output.get("data", {}).get("text/plain", "") for output in cell.outputs]
        assert len(images) == 1, (f"{stem}, cell {cell.id}: {len(images)} PNG outputs, expected 1; "
                                  f"text outputs {texts}")
    others = [cell.id for cell in notebook.cells
              if cell.cell_type == "code" and cell not in expected and png_outputs(cell)]
    assert not others, f"{stem}: images in cells that save no figure: {others}"
    stray = [cell.id for cell in notebook.cells if cell.cell_type == "code"
             for output in cell.outputs if "<Figure size" in output.get("data", {}).get("text/plain", "")]
    assert not stray, f"{stem}: figures shown as text, not images, in cells {stray}"
    print(f"{stem}: {len(expected)} figure cells, {sum(len(png_outputs(cell)) for cell in expected)} "
          f"images shown in the kernel")
