"""Jupyter notebooks from the tutorials: ``minivae notebooks DIR``.

The tutorials are plain Python files in the percent format: a line ``# %% [markdown]`` opens a text
cell whose lines are Markdown behind "# ", a line ``# %%`` opens a code cell. That format runs with
``python``, steps cell by cell in VS Code, Spyder or PyCharm, and diffs cleanly; for a course that
hands out notebooks, :func:`write_notebooks` converts every tutorial to an ``.ipynb`` file. A
notebook is plain JSON (nbformat 4), so no Jupyter package is needed to write one.

    minivae notebooks course-notebooks           # one .ipynb per tutorial, into course-notebooks/
    minivae notebooks out --from path/to/tutorials

Where the tutorials are found, first match wins: the folder given with ``--from``; the folder
``tutorials`` shipped inside the installed package (``minivae/tutorials``); the folder
``tutorials`` next to the package in a source checkout (an editable install).

Only the standard library is imported here, so ``minivae --help`` stays fast.
"""

import json
import re
from pathlib import Path

NBFORMAT = 4
NBFORMAT_MINOR = 5  # 4.5: every cell carries an "id"
TUTORIAL_PATTERN = "[0-9][0-9]_*.py"  # 01_latent_variable_models.py, ...

# "# %%" opens a cell; "[markdown]" after it makes it a text cell. Anything else on the line (a cell
# title, as in "# %% Train the model") is allowed and dropped, as Jupytext drops it into metadata.
_CELL_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
_MARKDOWN_TAG = re.compile(r"^\s*\[(markdown|md)\]")

_KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def percent_to_notebook(text):
    """Convert a percent-format Python script to a notebook.

    Rules (those of Jupytext's percent format, the subset the tutorials use):

    * a line starting with ``# %% [markdown]`` opens a Markdown cell; each of its lines loses its
      leading ``"# "`` (a line that is just ``"#"`` becomes empty);
    * a line starting with ``# %%`` opens a code cell, kept verbatim;
    * text before the first marker, if any is not blank, becomes a code cell;
    * blank lines at the start and end of a cell are dropped, and so are cells left empty.

    Parameters
    ----------
    text : str, the script

    Returns
    -------
    dict, an nbformat 4.5 notebook: ``{"cells": [...], "metadata": {...}, "nbformat": 4,
    "nbformat_minor": 5}``; each cell has ``cell_type`` ("markdown" or "code"), ``id``
    ("cell-0", "cell-1", ... in order, so the output is the same every time), ``metadata`` and
    ``source`` (a list of lines, each but the last ending in "\\n"); a code cell also has
    ``execution_count`` None and ``outputs`` [].
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (the script's source); got {type(text).__name__}")
    blocks = []  # (cell_type, lines)
    cell_type, lines = "code", []
    for line in text.splitlines():
        marker = _CELL_MARKER.match(line)
        if marker:
            blocks.append((cell_type, lines))
            cell_type = "markdown" if _MARKDOWN_TAG.match(marker.group("rest")) else "code"
            lines = []
        elif cell_type == "markdown":
            lines.append(_uncomment(line))
        else:
            lines.append(line)
    blocks.append((cell_type, lines))

    cells = []
    for cell_type, lines in blocks:
        lines = _strip_blank_edges(lines)
        if lines:
            cells.append(_cell(cell_type, lines, f"cell-{len(cells)}"))
    return {
        "cells": cells,
        "metadata": {"kernelspec": dict(_KERNELSPEC), "language_info": {"name": "python"}},
        "nbformat": NBFORMAT,
        "nbformat_minor": NBFORMAT_MINOR,
    }


def _uncomment(line):
    """A Markdown line of a percent script without its comment mark: "# text" -> "text", "#" -> ""."""
    if line.startswith("# "):
        return line[2:]
    if line.strip() == "#":
        return ""
    return line


def _strip_blank_edges(lines):
    start, stop = 0, len(lines)
    while start < stop and not lines[start].strip():
        start += 1
    while stop > start and not lines[stop - 1].strip():
        stop -= 1
    return lines[start:stop]


def _cell(cell_type, lines, cell_id):
    source = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    cell = {"cell_type": cell_type, "id": cell_id, "metadata": {}, "source": source}
    if cell_type == "code":
        cell["execution_count"] = None
        cell["outputs"] = []
    return cell


def find_tutorials_dir():
    """The folder of the tutorials: shipped inside the package, else next to it in a checkout.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        when neither ``minivae/tutorials`` nor ``<checkout>/tutorials`` holds a tutorial
    """
    package = Path(__file__).resolve().parent
    candidates = [package / "tutorials", package.parent / "tutorials"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob(TUTORIAL_PATTERN)):
            return folder
    raise FileNotFoundError(
        "found no tutorials (files NN_name.py) in " + " or ".join(str(c) for c in candidates)
        + "; pass the folder that holds them with --from DIR (tutorials_dir=...)")


def tutorial_paths(tutorials_dir=None):
    """The tutorial scripts, ``NN_*.py``, in course order.

    Parameters
    ----------
    tutorials_dir : str or os.PathLike or None (default :func:`find_tutorials_dir`)

    Returns
    -------
    list of pathlib.Path, sorted by name
    """
    folder = find_tutorials_dir() if tutorials_dir is None else Path(tutorials_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"tutorials_dir {str(folder)!r} is not a folder")
    paths = sorted(folder.glob(TUTORIAL_PATTERN))
    if not paths:
        raise FileNotFoundError(f"tutorials_dir {str(folder)!r} holds no tutorial "
                                f"(files matching {TUTORIAL_PATTERN})")
    return paths


def write_notebooks(out_dir, tutorials_dir=None):
    """Write one ``.ipynb`` per tutorial into ``out_dir`` (created if missing).

    Parameters
    ----------
    out_dir : str or os.PathLike
    tutorials_dir : str or os.PathLike or None, where the ``NN_*.py`` scripts are
        (default :func:`find_tutorials_dir`)

    Returns
    -------
    list of pathlib.Path, the notebooks written, in course order
    """
    from .files import write_text

    out_dir = Path(out_dir)
    sources = tutorial_paths(tutorials_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        notebook = percent_to_notebook(source.read_text(encoding="utf-8"))
        target = out_dir / (source.stem + ".ipynb")
        write_text(target, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------------
# minivae notebooks
# --------------------------------------------------------------------------------------------------

def add_parser(subcommands):
    """Add the ``notebooks`` subcommand to the ``minivae`` command's subparsers."""
    parser = subcommands.add_parser(
        "notebooks", help="write the tutorials as Jupyter notebooks (.ipynb)",
        description="Convert every tutorial (tutorials/NN_*.py, percent format) to a Jupyter notebook "
                    "in DIR. The notebooks are plain nbformat-4 JSON; run them with MINIVAE_QUICK=1 "
                    "for a fast pass.")
    parser.add_argument("out_dir", metavar="DIR", help="folder for the notebooks (created if missing)")
    parser.add_argument("--from", dest="tutorials_dir", metavar="TUTORIALS",
                        help="folder holding the tutorials (default: the ones shipped with minivae, "
                             "or tutorials/ of the source checkout)")
    parser.set_defaults(run=run)
    return parser


def run(args):
    """Run ``minivae notebooks``: write the notebooks and list them."""
    written = write_notebooks(args.out_dir, args.tutorials_dir)
    for path in written:
        print(path)
    print(f"wrote {len(written)} notebooks to {args.out_dir}")
    return 0
