"""``minivae compare``: pPCA, a linear VAE, a nonlinear Gaussian VAE and the categorical VAE, in the same nats.

The whole story on the 8x8 digits, for each latent size q (2 and 16 by default):

* **pPCA** fitted by exact maximum likelihood: its exact log p(x) on train (the maximum any linear
  Gaussian model can reach) and test.
* **A linear VAE** (``hidden=()``, Gaussian decoder with a learned σ²) trained the ordinary way:
  single-sample reparameterized gradients from :meth:`minivae.VAE.loss_and_grads`, Adam. Its decoder
  is a pPCA, so its ELBO, its exact log p(x) and the gap between them are known in closed form
  (:func:`minivae.linear_vae.linear_vae_exact`); the K=512 importance-weighted estimate is reported too,
  and must land between the ELBO and the exact value.
* **A nonlinear Gaussian VAE** with the reference architecture (hidden (256, 256), LeakyReLU) and the
  reference optimiser (Adamax 1e-3, batch 64, early stopping), its learned σ² starting at the average
  variance per dimension: its ELBO and K=512 estimate, which no closed form gives.
* **The categorical VAE** of the reference setting (``minivae train``): its discrete test NLL.

Units. The Gaussian models are densities on continuous x, so they see the digits *dequantized*,
``x + u`` with ``u ~ U[0, 1)^64`` (a seeded generator). For integer x a continuous density p induces
the discrete model P(x) = ∫_{[0,1)^64} p(x + u) du, and by Jensen's inequality
E_u[-log p(x + u)] ≥ -log P(x): the dequantized NLL of a continuous model upper-bounds the discrete
NLL of the discrete model it defines. So the categorical VAE's NLL on the integer digits and the
Gaussian models' NLL on the dequantized digits are in the same nats per example, and the comparison
can only flatter the categorical model. Bits per dimension are nats / (64 ln 2).

Why the linear VAE needs a schedule. The ELBO of a linear VAE has the same maximum as the pPCA
likelihood, and the decoder gets there along well-conditioned directions quickly. What is slow is
the last fraction of a nat: the columns of W whose eigenvalue λ_j sits not far above σ² (the log
likelihood is flat in them, its gradient shrinking with λ_j - σ²), the choice between nearly equal
eigenvalues at the edge of the subspace (λ_16 ≈ λ_17 on the digits), and the rotation that makes the
columns of W orthogonal so that a diagonal q(z|x) can be exact. There the true gradient is smaller
than the Monte Carlo noise of a single-sample ELBO gradient, and Adam, which scales every step to
about ``lr``, turns that noise into a jitter of the parameters that costs a few tenths of a nat. So
:func:`minivae.linear_vae.train_linear_vae` keeps a large learning rate for the first half (to travel) and then decays
it exponentially by a factor of a few hundred (to average the noise away), with minibatches of 250.

This module imports only the standard library at the top, so that ``minivae --help`` stays fast;
NumPy and the rest of minivae are imported inside the functions.
"""

import json
import sys
import time
from pathlib import Path

from .reference import LINEAR_SCHEDULE, REFERENCE

DEFAULT_OUT = "minivae-compare"
DEFAULT_LATENT_SIZES = (2, 16)
INPUT_DIM = 64  # the digits are 8x8
IMPORTANCE_SAMPLES = REFERENCE.test_samples  # K of every importance-weighted log p(x) estimate
MONTE_CARLO_SLACK = 0.05  # nats per example: how far a K=512 estimate may stray from its bounds by chance

# The linear VAE's optimisation is reference.LINEAR_SCHEDULE (see the module docstring for why it
# has a schedule).
TARGET_NATS = 0.1  # the linear VAE's training ELBO should end this close to the pPCA maximum

# The figure of the linear VAE's training.
CURVE_WINDOW_NATS = 10.0  # the left panel shows the last 10 nats of the approach to the pPCA maximum
CURVE_LOG_FLOOR = 1e-4  # nats; distances below this are drawn at it on the right panel's log scale

# The nonlinear models: the reference setting of ``minivae train``.
NONLINEAR_MAX_EPOCHS = 500  # fewer than REFERENCE.max_epochs: early stopping ends the run near epoch 130

# --quick: tiny settings, for tests (seconds, not minutes); the numbers are not meaningful.
QUICK = dict(linear_steps=1500, hidden=(16,), nonlinear_epochs=3, nonlinear_importance_samples=32)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

def load_dequantized_digits(seed):
    """The digits' standard split, as integers and dequantized.

    Parameters
    ----------
    seed : int; the noise u comes from ``numpy.random.default_rng([seed, 0])``, drawn for train,
        val and test in that order

    Returns
    -------
    integer : dict "train"/"val"/"test" -> (n, 64) int64 array, intensities 0..16
    continuous : dict with the same keys -> (n, 64) float64 array, x + u with u ~ U[0, 1)
    """
    import numpy as np

    from . import datasets

    rng = np.random.default_rng([seed, 0])
    integer = {name: datasets.load_digits(name)[0] for name in ("train", "val", "test")}
    continuous = {name: datasets.dequantize(x, rng) for name, x in integer.items()}
    return integer, continuous


def bits_per_dim(nats, input_dim=INPUT_DIM):
    """nats per example / (input_dim ln 2): bits per dimension (None stays None)."""
    from .evaluate import bits_per_dim as nats_to_bits

    return None if nats is None else nats_to_bits(nats, input_dim)


# --------------------------------------------------------------------------------------------------
# The nonlinear models
# --------------------------------------------------------------------------------------------------

def _fit_reference(model, x_train, x_val, epochs, seed):
    """fit() with its defaults, the reference setting, as ``minivae train`` runs it; returns the History."""
    import numpy as np

    from .training import fit

    history = fit(model, x_train, x_val, epochs=epochs, rng=np.random.default_rng(seed), verbose=False)
    if history.interrupted:  # fit keeps the work and returns; a comparison stops
        raise KeyboardInterrupt
    return history


def _evaluate_nonlinear(model, x_test, importance_samples, seed):
    """Test -ELBO (REFERENCE.elbo_samples draws) and -log p(x) (K importance samples), nats per example."""
    import numpy as np

    rng = np.random.default_rng([seed, 3])
    nelbo = -float(np.mean(model.elbo(x_test, n_samples=REFERENCE.elbo_samples, rng=rng)))
    nll = -float(np.mean(model.log_likelihood(x_test, n_samples=importance_samples, rng=rng)))
    return nelbo, nll


def categorical_from_run(run_dir):
    """The categorical VAE's test numbers from the ``summary.json`` of a finished ``minivae train`` run.

    Parameters
    ----------
    run_dir : str or os.PathLike, the ``--out`` folder of ``minivae train`` on the digits

    Returns
    -------
    dict, as in the "categorical_vae" entry of :func:`compare`
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"train_run {str(run_dir)!r} holds no summary.json; give the --out folder "
                                f"of a finished `minivae train` run")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"train_run {str(run_dir)!r}: summary.json cannot be read ({error})") from None
    if not isinstance(summary, dict):
        raise ValueError(f"train_run {str(run_dir)!r}: summary.json is not a summary of `minivae train`")
    if summary.get("interrupted"):
        raise ValueError(f"train_run {str(run_dir)!r} was interrupted and has no test numbers; give a finished "
                         f"run (or finish it with `minivae train --resume --out {run_dir}`)")
    missing = [key for key in ("test_nelbo", "test_nll") if key not in summary]
    if missing:
        raise ValueError(f"train_run {str(run_dir)!r}: summary.json has no {missing}")
    config = summary.get("config", {})
    if summary.get("data") != "digits" or config.get("likelihood") != "categorical":
        raise ValueError(f"train_run {str(run_dir)!r} must be a categorical VAE trained on the digits; "
                         f"its summary.json says data={summary.get('data')!r}, "
                         f"likelihood={config.get('likelihood')!r}")
    return {
        "source": str(path),
        "latent_dim": config.get("latent_dim"),
        "hidden": config.get("hidden"),
        "test_nelbo": summary["test_nelbo"],
        "test_nll_iw": summary["test_nll"],
        "importance_samples": summary.get("test_nll_samples"),
        "epochs": summary.get("epochs"),
        "train_seconds": summary.get("seconds"),
    }


# --------------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------------

def compare(latent_sizes=DEFAULT_LATENT_SIZES, seed=0, quick=False, linear_steps=None,
            linear_seconds=LINEAR_SCHEDULE.seconds, train_run=None, nonlinear=True, out=None, log=None):
    """Everything ``minivae compare`` reports, as a JSON-serialisable dict.

    All numbers are means over examples, in nats per example, with the sign of a loss: ``*_nll`` is
    -log p(x), ``*_nelbo`` is -ELBO (lower is better for both); ``*_gap`` is KL(q(z|x) || p(z|x)) ≥ 0.
    Every test NLL and -ELBO also comes in bits per dimension (``*_bits_per_dim``).

    Parameters
    ----------
    latent_sizes : sequence of int, the q of pPCA, the linear VAE and the nonlinear Gaussian VAE
    seed : int; everything random (dequantization, initial weights, minibatches, eps) derives from it
    quick : bool; tiny settings (a few thousand linear steps, hidden (16,), 3 epochs) that run in
        seconds, for tests. The numbers are then not meaningful
    linear_steps : int or None, the linear VAE's planned Adam steps (default LINEAR_SCHEDULE.steps, or
        QUICK["linear_steps"])
    linear_seconds : float, the linear VAE's time budget per latent size
    train_run : str or None, the ``--out`` folder of a finished ``minivae train`` run on the digits,
        whose summary.json gives the categorical VAE's numbers; None trains the reference model here
    nonlinear : bool; False skips the nonlinear Gaussian and categorical VAEs (unless train_run)
    out : str or os.PathLike or None; if given, compare.json and the figures are written there
    log : callable(str) or None, receives progress messages

    Returns
    -------
    dict; see ``format_table`` for a readable view and the README for the keys
    """
    import numpy as np

    from . import __version__
    from .linear_vae import linear_vae_exact, train_linear_vae
    from .ppca import PPCA
    from .vae import VAE

    latent_sizes = [_latent_size(q) for q in latent_sizes]
    categorical = None if train_run is None else categorical_from_run(train_run)  # checked before any training
    log = log or (lambda message: None)
    start = time.perf_counter()
    settings = QUICK if quick else dict(linear_steps=LINEAR_SCHEDULE.steps, hidden=REFERENCE.hidden,
                                        nonlinear_epochs=NONLINEAR_MAX_EPOCHS,
                                        nonlinear_importance_samples=IMPORTANCE_SAMPLES)
    linear_steps = settings["linear_steps"] if linear_steps is None else linear_steps
    integer, x = load_dequantized_digits(seed)
    n_train, n_test = len(x["train"]), len(x["test"])
    result = {
        "minivae_version": __version__,
        "units": "nats per example; *_nll = -log p(x), *_nelbo = -ELBO, lower is better; "
                 "*_bits_per_dim = nats / (64 ln 2)",
        "data": {"name": "digits", "dequantized": True, "seed": seed, "input_dim": INPUT_DIM,
                 "n_train": n_train, "n_val": len(x["val"]), "n_test": n_test},
        "settings": {"quick": bool(quick), "latent_sizes": latent_sizes, "linear_steps": linear_steps,
                     "linear_seconds": linear_seconds, "linear_batch_size": LINEAR_SCHEDULE.batch_size,
                     "linear_lr": LINEAR_SCHEDULE.lr, "linear_final_lr": LINEAR_SCHEDULE.final_lr,
                     "nonlinear_hidden": list(settings["hidden"]),
                     "nonlinear_max_epochs": settings["nonlinear_epochs"]},
        "results": {},
        "categorical_vae": None,
    }

    for q in latent_sizes:
        entry = result["results"][str(q)] = {}

        ppca = PPCA(q).fit(x["train"])
        entry["ppca"] = {
            "train_nll": -ppca.max_log_likelihood(),
            "test_nll": -ppca.mean_log_likelihood(x["test"]),
            "noise_variance": ppca.noise_variance_,
        }
        log(f"q={q}: pPCA train NLL {entry['ppca']['train_nll']:.3f}, test NLL {entry['ppca']['test_nll']:.3f}")

        model = VAE(INPUT_DIM, q, hidden=(), likelihood="gaussian", learn_variance=True, seed=seed,
                    dtype=np.float64)
        log(f"q={q}: training the linear VAE ({linear_steps} Adam steps, at most {linear_seconds:g} s)")
        trace = train_linear_vae(model, x["train"], np.random.default_rng([seed, 1, q]), steps=linear_steps,
                                 seconds=linear_seconds)
        train, test = linear_vae_exact(model, x["train"]), linear_vae_exact(model, x["test"])
        iw = model.log_likelihood(x["test"], n_samples=IMPORTANCE_SAMPLES, rng=np.random.default_rng([seed, 3]))
        linear = entry["linear_vae"] = {
            "train_nelbo": -float(np.mean(train.elbo)),
            "train_nll": -float(np.mean(train.log_px)),
            "train_gap": float(np.mean(train.gap)),
            "test_nelbo": -float(np.mean(test.elbo)),
            "test_nll": -float(np.mean(test.log_px)),
            "test_gap": float(np.mean(test.gap)),
            "test_nll_iw": -float(np.mean(iw)),
            "test_nll_iw_standard_error": float(np.std(iw, ddof=1) / np.sqrt(n_test)),
            "importance_samples": IMPORTANCE_SAMPLES,
            "noise_variance": float(np.exp(model.params["decoder.logvar"][0])),
            "steps": trace["steps"],
            "epochs": trace["epochs"],
            "train_seconds": trace["seconds"],
            "stopped_by_time_budget": trace["stopped_by_time_budget"],
            "trace": {key: trace[key] for key in ("step", "train_elbo", "train_log_px")},
        }
        linear["gap_to_ppca_max"] = linear["train_nelbo"] - entry["ppca"]["train_nll"]
        log(f"q={q}: linear VAE train -ELBO {linear['train_nelbo']:.3f} ({linear['gap_to_ppca_max']:.3f} above "
            f"the pPCA minimum) after {linear['steps']} steps in {linear['train_seconds']:.1f} s")

        if nonlinear:
            variance = float(np.mean(np.var(x["train"], axis=0)))
            model = VAE(INPUT_DIM, q, hidden=settings["hidden"], likelihood="gaussian", variance=variance,
                        learn_variance=True, seed=seed)
            log(f"q={q}: training the Gaussian VAE, hidden {settings['hidden']}")
            history = _fit_reference(model, x["train"], x["val"], settings["nonlinear_epochs"], seed)
            nelbo, nll = _evaluate_nonlinear(model, x["test"], settings["nonlinear_importance_samples"], seed)
            entry["gaussian_vae"] = {
                "hidden": list(settings["hidden"]),
                "test_nelbo": nelbo,
                "test_nll_iw": nll,
                "importance_samples": settings["nonlinear_importance_samples"],
                "epochs": history.epochs,
                "train_seconds": history.seconds,
            }
            log(f"q={q}: Gaussian VAE test -ELBO {nelbo:.3f}, NLL {nll:.3f} ({history.epochs} epochs, "
                f"{history.seconds:.1f} s)")
        for model_entry in entry.values():
            _add_bits_per_dim(model_entry)

    if train_run is not None:
        result["categorical_vae"] = categorical
    elif nonlinear:
        latent = REFERENCE.latent_dim
        model = VAE(INPUT_DIM, latent, hidden=settings["hidden"], likelihood="categorical", seed=seed)
        log(f"training the categorical VAE (latent {latent}, hidden {settings['hidden']}) on the integer digits")
        history = _fit_reference(model, integer["train"], integer["val"], settings["nonlinear_epochs"], seed)
        nelbo, nll = _evaluate_nonlinear(model, integer["test"], settings["nonlinear_importance_samples"], seed)
        result["categorical_vae"] = {"source": "trained by minivae compare", "latent_dim": latent,
                                     "hidden": list(settings["hidden"]), "test_nelbo": nelbo, "test_nll_iw": nll,
                                     "importance_samples": settings["nonlinear_importance_samples"],
                                     "epochs": history.epochs, "train_seconds": history.seconds}
    if result["categorical_vae"] is not None:
        _add_bits_per_dim(result["categorical_vae"])
    result["table"] = table_rows(result)
    result["seconds"] = time.perf_counter() - start
    if out is not None:
        write_outputs(result, out)
    return result


def _latent_size(q):
    if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q < INPUT_DIM:
        raise ValueError(f"each latent size must be an int from 1 to {INPUT_DIM - 1}; got {q!r}")
    return q


def _add_bits_per_dim(entry):
    """Add ``key + "_bits_per_dim"`` beside every test NLL and -ELBO of ``entry``, in place."""
    for key in [key for key in entry if key.startswith("test_n") and not key.endswith("_error")]:
        entry[key + "_bits_per_dim"] = bits_per_dim(entry[key])


# --------------------------------------------------------------------------------------------------
# The table, the figures and the files
# --------------------------------------------------------------------------------------------------

def table_rows(result):
    """The printed table as a list of dicts with keys latent_dim, model, measure, train_nats,
    test_nats, test_bits_per_dim (None where a number does not apply)."""
    rows = []

    def add(q, model, measure, train, test):
        rows.append({"latent_dim": q, "model": model, "measure": measure, "train_nats": train,
                     "test_nats": test, "test_bits_per_dim": bits_per_dim(test) if "gap" not in measure else None})

    for q, entry in result["results"].items():
        q = int(q)
        ppca, linear = entry["ppca"], entry["linear_vae"]
        add(q, "pPCA", "-log p(x), exact", ppca["train_nll"], ppca["test_nll"])
        add(q, "linear VAE", "-ELBO, closed form", linear["train_nelbo"], linear["test_nelbo"])
        add(q, "linear VAE", "-log p(x), exact", linear["train_nll"], linear["test_nll"])
        add(q, "linear VAE", "gap KL(q || p(z|x)), exact", linear["train_gap"], linear["test_gap"])
        add(q, "linear VAE", f"-log p(x), K={linear['importance_samples']}", None, linear["test_nll_iw"])
        if "gaussian_vae" in entry:
            gaussian = entry["gaussian_vae"]
            name = "Gaussian VAE " + "x".join(str(h) for h in gaussian["hidden"])
            add(q, name, f"-ELBO, {REFERENCE.elbo_samples} samples", None, gaussian["test_nelbo"])
            add(q, name, f"-log p(x), K={gaussian['importance_samples']}", None, gaussian["test_nll_iw"])
    categorical = result.get("categorical_vae")
    if categorical is not None:
        name = "categorical VAE"
        add(categorical["latent_dim"], name, "-ELBO, discrete", None, categorical["test_nelbo"])
        add(categorical["latent_dim"], name, f"-log P(x), discrete, K={categorical['importance_samples']}",
            None, categorical["test_nll_iw"])
    return rows


def format_table(result):
    """The result of :func:`compare` as a plain-text table and a closing note (str)."""
    def number(value, width, digits):
        return f"{'':>{width}}" if value is None else f"{value:{width}.{digits}f}"

    header = f"{'q':>3}  {'model':<22} {'measure':<30} {'train nats':>10} {'test nats':>10} {'bits/dim':>8}"
    lines = ["Digits, dequantized (x + u) for the Gaussian models; nats per example, lower is better.",
             header, "-" * len(header)]
    previous = None
    for row in result["table"]:
        if previous is not None and row["latent_dim"] != previous:
            lines.append("")
        previous = row["latent_dim"]
        lines.append(f"{row['latent_dim']:>3}  {row['model']:<22} {row['measure']:<30} "
                     f"{number(row['train_nats'], 10, 3)} {number(row['test_nats'], 10, 3)} "
                     f"{number(row['test_bits_per_dim'], 8, 4)}")
    lines.append("")
    for q, entry in result["results"].items():
        linear = entry["linear_vae"]
        budget = " (time budget reached)" if linear["stopped_by_time_budget"] else ""
        lines.append(f"q={q}: the linear VAE's training -ELBO is {linear['gap_to_ppca_max']:.4f} nats above the "
                     f"pPCA minimum after {linear['steps']} steps in {linear['train_seconds']:.1f} s{budget}.")
    lines.append("The categorical NLL is on the integer digits; a dequantized NLL upper-bounds the discrete "
                 "NLL of the model it induces, so the two compare in the same nats.")
    return "\n".join(lines)


def write_outputs(result, out):
    """compare.json, compare_curves_q{q}.png for each q and compare_gaps.png in the folder ``out``.

    Returns
    -------
    list of pathlib.Path, the files written
    """
    from . import plots
    from .files import OutputFolder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # every file under a temporary name, renamed into place together, compare.json last; figures of an
    # earlier run that this one does not draw (other latent sizes) are removed
    earlier = [path.name for path in out.glob("compare_curves_q*.png")]
    folder = OutputFolder(out, owned=[*earlier, "compare_bars.png", "compare_gaps.png", "compare.json"])
    try:
        for q, entry in result["results"].items():
            plot_linear_curves(entry, int(q), folder.path(f"compare_curves_q{q}.png"))
        # the gaps that compare exists to show are 0.001-0.04 nats on numbers of about 150: drawn as
        # differences from pPCA's exact test NLL of the same q, on a log axis
        names, values, references = [], [], []
        for row in result["table"]:
            if row["test_bits_per_dim"] is None or row["model"] in ("pPCA", "categorical VAE"):
                continue  # gaps have no bits/dim; the categorical VAE's -log P(x) is discrete, not comparable
            names.append(f"q={row['latent_dim']} {row['model']}: {row['measure']}")
            values.append(row["test_nats"])
            references.append(result["results"][str(row["latent_dim"])]["ppca"]["test_nll"])
        if names:
            plots.plot_gaps(names, values, references, folder.path("compare_gaps.png"),
                            reference_name="pPCA's exact test NLL (same q)", xlabel="nats per example",
                            title="Test nats per example, as differences from pPCA")
        folder.write_text("compare.json", json.dumps(result, indent=1))
    except BaseException:
        folder.discard()
        raise
    return folder.commit(last="compare.json")


def plot_linear_curves(entry, q, path):
    """The linear VAE's exact training ELBO and log p(x) against steps, under the pPCA maximum.

    Left: the closed-form training ELBO and the exact log p(x) of the VAE's decoder, with the pPCA
    maximum log-likelihood as a dashed line, zoomed on the last ``CURVE_WINDOW_NATS`` of the
    approach (ELBO ≤ log p(x) of the decoder ≤ pPCA maximum at every step). Right: how far each is
    below the maximum, on log axes, with the 0.1-nat target.

    Parameters
    ----------
    entry : dict, ``result["results"][str(q)]`` of :func:`compare`
    q : int
    path : str or os.PathLike

    Returns
    -------
    pathlib.Path
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    from . import plots

    trace = entry["linear_vae"]["trace"]
    steps = np.asarray(trace["step"], dtype=float)
    keep = steps > 0                                                # log axes: the initial point is off
    steps, elbo, log_px = steps[keep], np.asarray(trace["train_elbo"])[keep], np.asarray(trace["train_log_px"])[keep]
    maximum = -entry["ppca"]["train_nll"]

    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(steps, elbo, color="C0", label="linear VAE: ELBO (closed form)")
    left.plot(steps, log_px, color="C1", label="linear VAE: exact log p(x) of its decoder")
    left.axhline(maximum, color="C2", linestyle="--", label=f"pPCA maximum log-likelihood ({maximum:.2f})")
    final_gap = float(maximum - elbo[-1])
    left.set_ylim(maximum - max(CURVE_WINDOW_NATS, 3 * final_gap), maximum + 0.15 * CURVE_WINDOW_NATS)
    left.set_ylabel("training nats per example")
    left.legend(loc="lower right", fontsize="small")

    right.plot(steps, np.maximum(maximum - elbo, CURVE_LOG_FLOOR), color="C0", label="pPCA maximum - ELBO")
    right.plot(steps, np.maximum(maximum - log_px, CURVE_LOG_FLOOR), color="C1",
               label="pPCA maximum - log p(x)")
    right.axhline(TARGET_NATS, color="0.4", linestyle=":", label=f"{TARGET_NATS:g} nats")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    right.set_ylabel("nats per example below the pPCA maximum")
    right.legend(loc="lower left", fontsize="small")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.set_xlabel("Adam steps")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Linear VAE, q={q}, dequantized digits: the ELBO, trained by reparameterized gradients, "
                 f"climbs to the pPCA maximum", fontsize="medium")
    return plots.save_figure(fig, path)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def add_parser(subcommands):
    """Add the ``compare`` subcommand to the ``argparse`` subparsers of :mod:`minivae.cli`."""
    parser = subcommands.add_parser(
        "compare", help="pPCA vs linear, nonlinear and categorical VAEs on the digits, in the same nats",
        description="For each latent size: pPCA's exact log-likelihood, a linear VAE's closed-form ELBO, "
                    "exact log p(x), gap and K=512 estimate, a nonlinear Gaussian VAE's ELBO and K=512 "
                    "estimate, and the categorical VAE's test NLL, in nats per example and bits per "
                    "dimension. The Gaussian models see the dequantized digits x + u, u ~ U[0, 1).")
    parser.add_argument("--latent", default=",".join(str(q) for q in DEFAULT_LATENT_SIZES),
                        help="latent sizes, comma separated (default 2,16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"folder for compare.json and the figures (default {DEFAULT_OUT})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON, and nothing else, "
                                                            "on stdout")
    parser.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (for tests)")
    parser.add_argument("--linear-seconds", type=float, default=LINEAR_SCHEDULE.seconds,
                        help=f"time budget of each linear VAE (default {LINEAR_SCHEDULE.seconds:g})")
    parser.add_argument("--linear-steps", type=int,
                        help=f"planned Adam steps of each linear VAE (default {LINEAR_SCHEDULE.steps})")
    parser.add_argument("--train-run", metavar="DIR",
                        help="reuse a finished `minivae train` run (its summary.json) for the categorical "
                             "VAE instead of training it here")
    parser.add_argument("--no-nonlinear", action="store_true",
                        help="skip the nonlinear Gaussian VAE and (without --train-run) the categorical VAE")
    parser.add_argument("--no-figures", action="store_true", help="write compare.json only")
    parser.add_argument("--quiet", action="store_true", help="no progress messages (they go to stderr)")
    parser.set_defaults(run=run)
    return parser


def parse_latent_sizes(text):
    """``"2,16"`` -> [2, 16], or a ValueError naming --latent."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--latent must be comma-separated integers such as 2,16; got {text!r}") from None
    if not sizes:
        raise ValueError(f"--latent must name at least one latent size; got {text!r}")
    return sizes


def run(args):
    """``minivae compare``: compute, write the files, print the table (or the JSON)."""
    def log(message):
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    if not (args.linear_seconds > 0):
        raise ValueError(f"--linear-seconds must be positive; got {args.linear_seconds}")
    result = compare(parse_latent_sizes(args.latent), seed=args.seed, quick=args.quick,
                     linear_steps=args.linear_steps, linear_seconds=args.linear_seconds,
                     train_run=args.train_run, nonlinear=not args.no_nonlinear, out=None, log=log)
    out = Path(args.out)
    if args.no_figures:
        from .files import write_text

        out.mkdir(parents=True, exist_ok=True)
        written = [write_text(out / "compare.json", json.dumps(result, indent=1))]
    else:
        written = write_outputs(result, out)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_table(result))
        print(f"wrote {', '.join(str(path) for path in written)} ({result['seconds']:.0f} s in all)")
    return 0
