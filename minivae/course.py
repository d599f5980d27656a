"""Small conveniences for the tutorials: run size, figures, checked claims and the reference model.

**Size.** A tutorial runs at one of three sizes, chosen by the environment variable
``MINIVAE_SIZE``:

* ``full`` (the default): the experiments the prose describes; every claim is checked;
* ``lab``: for a class in a lab: the reference model at full size (trained once, then read from the
  cache, see :func:`reference_model`), the other experiments shortened; the numbers are close to
  the full ones but the claims are not enforced;
* ``quick``: seconds per tutorial, tiny models; the figures are drawn, the numbers mean little.
  The test suite runs every tutorial this way. ``MINIVAE_QUICK=1`` is the older spelling of
  ``MINIVAE_SIZE=quick`` and still works.

**Figures.** :func:`figure_path` says where a figure goes: under ``MINIVAE_FIGURES`` (default
``./minivae-figures``) in a folder named after the tutorial, as PNG, or in the format named by
``MINIVAE_FIGURE_FORMAT`` (``svg``, ``pdf``, ...). ``MINIVAE_FONTSCALE=1.5`` makes every font of the
figures 1.5 times larger (for slides). :func:`show` displays a figure inline when the tutorial runs
in a Jupyter kernel (Jupyter, JupyterLab, VS Code, Colab) and does nothing under plain ``python``.

**Claims.** :func:`claim` checks a statement the prose makes about a computed number: at full size
a false claim stops the tutorial with an ``AssertionError`` that quotes it; at the other sizes it
only prints that the claim does not hold at this size. ``pytest -m full`` runs every tutorial at
full size, so the prose cannot drift from the numbers.
"""

import hashlib
import io
import json
import os
import sys
from pathlib import Path

SIZE_VARIABLE = "MINIVAE_SIZE"
QUICK_VARIABLE = "MINIVAE_QUICK"
FIGURES_VARIABLE = "MINIVAE_FIGURES"
FORMAT_VARIABLE = "MINIVAE_FIGURE_FORMAT"
FONTSCALE_VARIABLE = "MINIVAE_FONTSCALE"
DEFAULT_FIGURES = "minivae-figures"
SIZES = ("quick", "lab", "full")
_FALSE = ("", "0", "false", "no")

# Where the reference model is cached, inside the figures folder, and its files.
REFERENCE_FOLDER = "reference-model"
REFERENCE_FILES = ("params.npz", "settings.json", "history.json")
# In quick mode the reference model is a tiny stand-in, trained for a few epochs.
QUICK_REFERENCE = {"hidden": (32,), "max_epochs": 2}
# The modules whose code decides what training produces; a change to any of them retrains the cached
# reference model (a student's edit to the model reaches the tutorials). Tutorial helpers are not
# among them.
_NOT_TRAINING_CODE = ("course.py", "plots.py", "notebooks.py", "cli.py", "bench.py", "compare.py",
                      "__main__.py")


def size_name():
    """The run size, "quick", "lab" or "full", from ``MINIVAE_SIZE`` (else ``MINIVAE_QUICK``).

    Raises
    ------
    ValueError
        when ``MINIVAE_SIZE`` is set to anything else
    """
    value = os.environ.get(SIZE_VARIABLE, "").strip().lower()
    if value:
        if value not in SIZES:
            raise ValueError(f"{SIZE_VARIABLE} must be one of {', '.join(SIZES)}; got {value!r}")
        return value
    if os.environ.get(QUICK_VARIABLE, "").strip().lower() not in _FALSE:
        return "quick"
    return "full"


def quick():
    """True at quick size (``MINIVAE_SIZE=quick`` or ``MINIVAE_QUICK=1``)."""
    return size_name() == "quick"


def full():
    """True at full size, where the tutorials check the claims of their prose."""
    return size_name() == "full"


def size(full_value, quick_value, lab=None):
    """The value for the current size: ``epochs = course.size(200, 3, lab=50)``.

    ``lab`` defaults to ``full_value``: an experiment that is cheap, or cached, runs in full in a lab.
    """
    name = size_name()
    if name == "quick":
        return quick_value
    if name == "lab" and lab is not None:
        return lab
    return full_value


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------

def figures_root():
    """The folder that holds every tutorial's figures (``MINIVAE_FIGURES``, default
    ``./minivae-figures``) and the cached reference model."""
    return Path(os.environ.get(FIGURES_VARIABLE, DEFAULT_FIGURES))


def figure_path(tutorial, name):
    """The path of figure ``name`` (e.g. "samples.png") of ``tutorial`` (e.g. "01_ppca"), created
    folders included; printed so that the reader knows where to look.

    With ``MINIVAE_FIGURE_FORMAT=svg`` (or pdf, ...) the suffix of ``name`` is replaced by that
    format; :func:`minivae.plots.save_figure` writes the format the suffix names.
    """
    folder = figures_root() / tutorial
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    figure_format = os.environ.get(FORMAT_VARIABLE, "").strip().lower().lstrip(".")
    if figure_format:
        path = path.with_suffix("." + figure_format)
    print(f"figure: {path}")
    return path


def _kernel_shell():
    """The running IPython shell if this process is a Jupyter kernel, else None.

    IPython is looked up in ``sys.modules`` and never imported: it is not a dependency of minivae,
    and a script run with ``python`` has not loaded it.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    shell = ipython.get_ipython()
    # A kernel's shell (ipykernel, Colab's) has a kernel; a terminal IPython has none and shows no
    # images, so nothing is sent there.
    return shell if getattr(shell, "kernel", None) is not None else None


def show(fig):
    """Display ``fig`` (a matplotlib Figure) inline when running in a Jupyter kernel.

    The tutorials' figures are made without pyplot, so no backend displays them; this sends the
    figure to the notebook as a PNG image (``image/png`` output), which Jupyter, JupyterLab, VS Code
    and Colab all show. Under plain ``python`` it does nothing: the figure is in its file.

    Returns
    -------
    None (so that a cell ending in ``course.show(fig)`` shows the figure once)
    """
    shell = _kernel_shell()
    if shell is None:
        return None
    from IPython.display import Image, display

    from .plots import SAVE_DPI

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=SAVE_DPI, bbox_inches="tight", pad_inches=0.05)
    display(Image(data=buffer.getvalue(), format="png"))
    return None


def _apply_fontscale():
    """Scale every font of the figures by ``MINIVAE_FONTSCALE``, if it is set."""
    value = os.environ.get(FONTSCALE_VARIABLE, "").strip()
    if not value:
        return
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(f"{FONTSCALE_VARIABLE} must be a number such as 1.5; got {value!r}") from None
    from .plots import set_fontscale

    set_fontscale(scale)


_apply_fontscale()


# --------------------------------------------------------------------------------------------------
# Claims of the prose
# --------------------------------------------------------------------------------------------------

def claim(holds, statement):
    """Check a statement of the prose against the computed numbers.

    Parameters
    ----------
    holds : bool, whether the numbers bear the statement out
    statement : str, the statement as the prose makes it, with the numbers that decide it

    At full size a false claim raises ``AssertionError("the prose says: ...")``; at lab and quick
    size, where the experiments are smaller than the prose describes, it prints a note instead.
    Every claim prints one line, ``claim: ...`` with ``holds`` or ``does not hold``.
    """
    ok = bool(holds)
    print(f"claim {'holds' if ok else 'does NOT hold'}: {statement}")
    if not ok and full():
        raise AssertionError(f"the prose says: {statement}")
    return ok


# --------------------------------------------------------------------------------------------------
# The reference model, trained once
# --------------------------------------------------------------------------------------------------

def _training_code_fingerprint():
    """SHA-256 of the package's Python files that training depends on (see _NOT_TRAINING_CODE)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.parent == package and path.name in _NOT_TRAINING_CODE:
            continue
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def reference_settings():
    """The settings of the reference model at the current size: :data:`minivae.reference.REFERENCE`
    (at quick size with a tiny network, see ``QUICK_REFERENCE``), and a fingerprint of the training
    code. A cached model is reused only if its settings are exactly these."""
    from .reference import REFERENCE

    settings = REFERENCE.to_dict()
    if quick():
        settings.update(QUICK_REFERENCE)
    settings["hidden"] = list(settings["hidden"])
    settings["size"] = "quick" if quick() else "full"
    settings["code"] = _training_code_fingerprint()
    return settings


def reference_model(callback=None, retrain=False):
    """The reference VAE on the digits, trained as ``minivae train`` trains it, cached on disk.

    The first call trains it (a minute or two in full) and writes ``params.npz``, ``settings.json``
    and ``history.json`` to ``<figures folder>/reference-model/``; later calls, in any tutorial,
    read them back in a fraction of a second, as long as the settings (and the training code) are
    unchanged. Otherwise, or with ``retrain=True``, it is trained again.

    The training: ``minivae.VAE(64, 16, hidden=(256, 256), likelihood="categorical", seed=0)``,
    ``minivae.fit`` with Adamax (lr 1e-3), minibatches of 64, early stopping with patience 20 on the
    single-sample validation -ELBO, Polyak averaging with decay 0.999, shuffling and noise from
    ``numpy.random.default_rng(0)``: every number from :data:`minivae.reference.REFERENCE`.

    Parameters
    ----------
    callback : callable(epoch, history) or None, passed to :func:`minivae.fit` when training
    retrain : bool, train even if a matching cached model exists

    Returns
    -------
    model : :class:`minivae.VAE`
    history : :class:`minivae.History`
    trained : bool, True if this call trained the model, False if it was read from the cache
    """
    import numpy as np

    from . import datasets
    from .optim import make_optimizer
    from .training import History, fit
    from .vae import VAE

    settings = reference_settings()
    folder = figures_root() / REFERENCE_FOLDER
    paths = {name: folder / name for name in REFERENCE_FILES}
    if not retrain and all(path.is_file() for path in paths.values()):
        try:
            cached = json.loads(paths["settings.json"].read_text(encoding="utf-8"))
            if cached == settings:
                model = VAE.load(paths["params.npz"])
                history = History(**json.loads(paths["history.json"].read_text(encoding="utf-8")))
                print(f"reference model: read from {folder} (trained earlier with the same settings)")
                return model, history, False
        except (ValueError, OSError, TypeError):
            pass  # a damaged or foreign cache: train again
        print(f"reference model: the cache in {folder} has other settings; training again")

    x_train, _ = datasets.load_digits("train")
    x_val, _ = datasets.load_digits("val")
    model = VAE(settings["input_dim"], settings["latent_dim"], hidden=tuple(settings["hidden"]),
                activation=settings["activation"], likelihood=settings["likelihood"],
                num_values=settings["num_values"], seed=settings["seed"])
    history = fit(model, x_train, x_val, epochs=settings["max_epochs"],
                  batch_size=settings["batch_size"],
                  optimizer=make_optimizer(settings["optimizer"], settings["lr"]),
                  patience=settings["patience"], rng=np.random.default_rng(settings["seed"]),
                  val_samples=settings["val_samples"], ema=settings["ema"], verbose=False,
                  callback=callback)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(paths["params.npz"])
    paths["history.json"].write_text(json.dumps(history.to_dict(), indent=1), encoding="utf-8")
    # settings last: a cache whose settings file exists is complete
    paths["settings.json"].write_text(json.dumps(settings, indent=1), encoding="utf-8")
    print(f"reference model: trained in {history.seconds:.0f} s and saved to {folder}")
    return model, history, True
