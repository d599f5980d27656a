"""Every tutorial runs top to bottom in quick mode and writes every figure it announces.

Each ``tutorials/NN_*.py`` is run as a student would run it, ``python tutorials/NN_topic.py``, in a
fresh process with ``MINIVAE_QUICK=1`` (reduced size), the non-interactive Agg backend, figures
directed to a temporary folder and a temporary working directory. New tutorials are picked up by
their file name.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS_DIR = Path(__file__).resolve().parents[1] / "tutorials"
TUTORIALS = sorted(TUTORIALS_DIR.glob("[0-9][0-9]_*.py"))
FIGURE_PREFIX = "figure: "  # what minivae.course.figure_path prints
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 2000  # smaller than any real figure (a 1-row strip of digits is about 3 kB)
QUICK_TIMEOUT_SECONDS = 120  # a quick run takes seconds; this only stops a hung one


def run_tutorial(path, tmp_path):
    """Run one tutorial in quick mode; return (completed process, figures folder)."""
    figures = tmp_path / "figures"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = dict(os.environ, MINIVAE_QUICK="1", MPLBACKEND="Agg", MINIVAE_FIGURES=str(figures),
               PYTHONWARNINGS="default")
    result = subprocess.run([sys.executable, str(path)], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=QUICK_TIMEOUT_SECONDS)
    return result, figures


def announced_figures(stdout):
    return [Path(line[len(FIGURE_PREFIX):].strip()) for line in stdout.splitlines()
            if line.startswith(FIGURE_PREFIX)]


def test_the_course_has_its_first_four_tutorials():
    names = [path.stem for path in TUTORIALS]
    for prefix in ("01_", "02_", "03_", "04_"):
        assert any(name.startswith(prefix) for name in names), f"no tutorial {prefix}*.py in {TUTORIALS_DIR}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorial_runs_quick_and_writes_every_figure(path, tmp_path):
    result, figures = run_tutorial(path, tmp_path)
    assert result.returncode == 0, (f"{path.name} failed (exit {result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    assert "cannot be shown" not in result.stderr, f"{path.name} calls plt.show():\n{result.stderr}"

    announced = announced_figures(result.stdout)
    assert announced, f"{path.name} printed no 'figure: PATH' line; use minivae.course.figure_path"
    for figure in announced:
        assert figure.resolve().is_relative_to(figures.resolve()), (
            f"{path.name} saved {figure} outside MINIVAE_FIGURES={figures}")
        assert figure.is_file(), f"{path.name} announced {figure} but did not write it"
        data = figure.read_bytes()
        assert data[:8] == PNG_SIGNATURE, f"{figure} is not a PNG"
        assert len(data) > MIN_PNG_BYTES, f"{figure} is only {len(data)} bytes"
    assert len(set(announced)) == len(announced), f"{path.name} announced a figure twice: {announced}"

    written = set(figures.rglob("*.png"))
    assert written == set(announced), (f"{path.name} wrote figures it did not announce: "
                                       f"{sorted(map(str, written - set(announced)))}")
    left_behind = sorted(p.name for p in (tmp_path / "cwd").iterdir())
    assert not left_behind, f"{path.name} wrote into the working directory: {left_behind}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorial_is_in_percent_format_with_a_title_and_a_takeaway(path):
    text = path.read_text(encoding="utf-8")
    cells = text.split("# %%")
    assert text.startswith("# %% [markdown]\n# # "), f"{path.name} must open with a markdown title cell"
    assert any(cell.startswith(" [markdown]") and "## What to take away" in cell for cell in cells[-2:]), (
        f"{path.name} must end with a 'What to take away' markdown cell")
    code = "\n".join(cell for cell in cells if not cell.startswith(" [markdown]"))
    assert "plt.show(" not in code, (
        f"{path.name} calls plt.show(); save figures with minivae.plots or Figure.savefig instead")
    assert "np.random.seed(" not in code and "np.random.rand" not in code, (
        f"{path.name} uses NumPy's global random state; use np.random.default_rng(seed)")


def test_readme_links_every_tutorial():
    readme = (TUTORIALS_DIR / "README.md").read_text(encoding="utf-8")
    for path in TUTORIALS:
        assert f"]({path.name})" in readme, f"tutorials/README.md does not link {path.name}"
