"""Small conveniences for the tutorials: quick mode and where figures go.

A tutorial runs in full by default. With the environment variable ``MINIVAE_QUICK=1`` it runs at a
reduced size, in seconds (the test suite runs every tutorial that way). Figures are saved under
``MINIVAE_FIGURES`` (default ``./minivae-figures``) in a folder named after the tutorial.
"""

import os
from pathlib import Path

QUICK_VARIABLE = "MINIVAE_QUICK"
FIGURES_VARIABLE = "MINIVAE_FIGURES"
DEFAULT_FIGURES = "minivae-figures"


def quick():
    """True when ``MINIVAE_QUICK`` is set to something other than "", "0" or "false"."""
    return os.environ.get(QUICK_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def size(full, quick_value):
    """``quick_value`` in quick mode, else ``full``: ``epochs = size(200, 3)``."""
    return quick_value if quick() else full


def figure_path(tutorial, name):
    """The path of figure ``name`` (e.g. "samples.png") of ``tutorial`` (e.g. "01_ppca"), created
    folders included; printed so that the reader knows where to look."""
    folder = Path(os.environ.get(FIGURES_VARIABLE, DEFAULT_FIGURES)) / tutorial
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    print(f"figure: {path}")
    return path
