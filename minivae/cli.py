"""The command line: ``minivae train`` (the main job) and the other subcommands.

    minivae train                      # the reference setting on the shipped digits, into minivae-run/
    minivae train --data x.npy --likelihood bernoulli --binarize 0.5 --out my-run

Every subcommand imports what it needs when it runs, so ``minivae --help`` starts at once.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from .reference import REFERENCE

DEFAULT_OUT = "minivae-run"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minivae", description="Variational autoencoders written by hand in NumPy.")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.required = True

    train = subcommands.add_parser(
        "train", help="train a VAE (default: the reference setting on the shipped digits)",
        description="Train a VAE and write its parameters, summary.json, history and figures to --out. "
                    "The defaults are the reference setting: 8x8 digits, categorical decoder with 17 "
                    "values, latent 16, hidden (256, 256) LeakyReLU, Adamax 1e-3, batch 64, early "
                    "stopping on the validation -ELBO with patience 20.")
    data = train.add_argument_group("data")
    data.add_argument("--data", metavar="PATH",
                      help="your own data (.npy, .npz, .csv, .csv.gz, IDX); split in file order into "
                           "train/val/test by --val-fraction and --test-fraction (default: the digits)")
    data.add_argument("--val-fraction", type=float, default=0.1, help="with --data (default 0.1)")
    data.add_argument("--test-fraction", type=float, default=0.1, help="with --data (default 0.1)")
    data.add_argument("--binarize", type=float, metavar="THRESHOLD",
                      help="scale to [0, 1] and threshold (for --likelihood bernoulli)")
    data.add_argument("--image-shape", metavar="HxW",
                      help="shape of one image for the figures, e.g. 28x28 (default: square if possible)")
    model = train.add_argument_group("model")
    model.add_argument("--likelihood", choices=["categorical", "bernoulli", "gaussian"], default="categorical")
    model.add_argument("--num-values", type=int,
                       help="values per dimension for categorical (default: 17 for the digits, max+1 for --data)")
    model.add_argument("--latent", type=int, default=REFERENCE.latent_dim,
                       help=f"latent dimensions (default {REFERENCE.latent_dim})")
    model.add_argument("--hidden", default=",".join(map(str, REFERENCE.hidden)),
                       help="hidden widths, comma separated; '' for a linear model (default %(default)s)")
    model.add_argument("--activation", choices=["leaky_relu", "relu", "tanh", "sigmoid"], default="leaky_relu")
    model.add_argument("--variance", type=float, default=1.0, help="Gaussian σ² (initial value if learned)")
    model.add_argument("--learn-variance", action="store_true", help="learn the Gaussian σ²")
    model.add_argument("--beta", type=float, default=1.0, help="KL weight in the training loss (default %(default)s)")
    model.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    optimisation = train.add_argument_group("optimisation")
    optimisation.add_argument("--optimizer", choices=["adamax", "adam", "sgd"], default="adamax")
    optimisation.add_argument("--lr", type=float, default=REFERENCE.lr,
                              help=f"learning rate (default {REFERENCE.lr:g})")
    optimisation.add_argument("--batch-size", type=int, default=REFERENCE.batch_size)
    optimisation.add_argument("--epochs", type=int, default=REFERENCE.max_epochs,
                              help=f"at most this many (default {REFERENCE.max_epochs})")
    optimisation.add_argument("--patience", type=int, default=REFERENCE.patience,
                              help=f"early stopping patience (default {REFERENCE.patience})")
    optimisation.add_argument("--val-samples", type=int, default=REFERENCE.val_samples,
                              help="samples of z per validation example in the early-stopping -ELBO (default %(default)s)")
    optimisation.add_argument("--ema", type=float, default=REFERENCE.ema,
                              help="Polyak averaging: validate and keep a moving average of the weights with "
                                   "this decay (default %(default)s; 0 trains the plain reference setting)")
    optimisation.add_argument("--seed", type=int, default=REFERENCE.seed)
    output = train.add_argument_group("output")
    output.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    output.add_argument("--test-samples", type=int, default=REFERENCE.test_samples,
                        help=f"K for the importance-weighted test NLL (default {REFERENCE.test_samples})")
    output.add_argument("--no-figures", action="store_true", help="skip the figures")
    output.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    train.set_defaults(run=run_train)
    from . import compare
    compare.add_parser(subcommands)

    from . import notebooks
    notebooks.add_parser(subcommands)

    from . import bench
    bench.add_parser(subcommands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.exit(2, f"minivae {args.command}: error: {error}\n")


# --------------------------------------------------------------------------------------------------
# minivae train
# --------------------------------------------------------------------------------------------------

def load_training_data(args):
    """Train/val/test arrays, labels (or None) and the image shape, from --data or the digits."""
    import numpy as np

    from . import datasets

    if args.data is None:
        splits = {name: datasets.load_digits(name) for name in ("train", "val", "test")}
        x = {name: xy[0] for name, xy in splits.items()}
        labels = {name: xy[1] for name, xy in splits.items()}
        image_shape = datasets.DIGITS_IMAGE_SHAPE
        num_values = datasets.DIGITS_NUM_VALUES
        if args.likelihood == "bernoulli" and args.binarize is None:
            raise ValueError("the digits take values 0..16; give --binarize THRESHOLD (e.g. 0.5) for "
                             "--likelihood bernoulli")
    else:
        data = datasets.load_array(args.data)
        parts = datasets.split(data, val_fraction=args.val_fraction, test_fraction=args.test_fraction)
        x, labels = parts, None
        num_values = None
        side = int(round(np.sqrt(data.shape[1])))
        image_shape = (side, side) if side * side == data.shape[1] else None
    if args.binarize is not None:
        top = max(float(part.max()) for part in x.values())
        x = {name: datasets.binarize(datasets.scale(part, top), args.binarize) for name, part in x.items()}
    if args.likelihood == "categorical":
        num_values = args.num_values or num_values or int(max(part.max() for part in x.values())) + 1
    if args.image_shape:
        image_shape = tuple(int(s) for s in args.image_shape.lower().split("x"))
    return x, labels, image_shape, num_values


def run_train(args):
    import numpy as np

    from . import optim
    from .training import fit
    from .vae import VAE

    start = time.perf_counter()
    x, labels, image_shape, num_values = load_training_data(args)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    model = VAE(x["train"].shape[1], args.latent, hidden=hidden, activation=args.activation,
                likelihood=args.likelihood, num_values=num_values or 17, variance=args.variance,
                learn_variance=args.learn_variance, beta=args.beta, seed=args.seed, dtype=args.dtype)
    optimizer = optim.make_optimizer(args.optimizer, args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: None) if args.quiet else print
    log(f"minivae train: {model}")
    log(f"  data: {args.data or 'digits'} train {len(x['train'])}, val {len(x['val'])}, "
        f"test {len(x['test'])}; {optimizer}, batch {args.batch_size}, patience {args.patience}")

    history = fit(model, x["train"], x["val"], epochs=args.epochs, batch_size=args.batch_size,
                  optimizer=optimizer, patience=args.patience, rng=np.random.default_rng(args.seed),
                  val_samples=args.val_samples, ema=args.ema or None, verbose=not args.quiet)
    train_seconds = time.perf_counter() - start

    rng = np.random.default_rng([args.seed, 1])
    test = x["test"]
    reconstruction, kl = model.elbo_parts(test, n_samples=REFERENCE.elbo_samples, rng=rng)
    nll = -model.log_likelihood(test, n_samples=args.test_samples, rng=rng)
    summary = {
        "data": args.data or "digits",
        "test_nelbo": float(np.mean(kl - reconstruction)),
        "test_nll": float(np.mean(nll)),
        "test_nll_bits_per_dim": float(np.mean(nll) / (test.shape[1] * np.log(2))),
        "test_rate": float(np.mean(kl)),
        "test_distortion": float(-np.mean(reconstruction)),
        "test_nll_samples": args.test_samples,
        "test_elbo_samples": REFERENCE.elbo_samples,
        "val_best_nelbo": history.best_val_loss,
        "best_epoch": history.best_epoch,
        "epochs": history.epochs,
        "steps": history.steps,
        "seconds": train_seconds,
        "active_units": model.active_units(test),
        "n_params": model.n_params,
        "config": model.config,
        "settings": {key: value for key, value in vars(args).items() if key not in ("run", "command")},
    }
    model.save(out / "params.npz")
    (out / "history.json").write_text(json.dumps(history.to_dict(), indent=1))
    if not args.no_figures:
        write_train_figures(model, history, x, labels, image_shape, out, rng)
    summary["seconds_total"] = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"test -ELBO {summary['test_nelbo']:.2f} nats, test NLL (K={args.test_samples}) "
          f"{summary['test_nll']:.2f} nats ({summary['test_nll_bits_per_dim']:.3f} bits/dim), "
          f"rate {summary['test_rate']:.2f}, active units {summary['active_units']}/{model.latent_dim}; "
          f"{history.epochs} epochs in {train_seconds:.1f} s")
    print(f"wrote {out}/: params.npz, summary.json, history.json"
          + ("" if args.no_figures else ", curves.png, reconstructions.png, samples.png, latent.png"))
    return 0


def write_train_figures(model, history, x, labels, image_shape, out, rng):
    """curves.png, reconstructions.png, samples.png and latent.png in ``out``."""
    from . import plots

    test = x["test"]
    plots.plot_history(history, out / "curves.png", title="Training and validation −ELBO")
    mu, _ = model.encode(test)
    test_labels = None if labels is None else labels["test"]
    plots.plot_latent(mu, test_labels, out / "latent.png", title="Posterior means of the test set")
    if image_shape is None:
        return
    vmax = float(max(test.max(), 1))
    plots.plot_reconstructions(test[:10], model.reconstruct(test[:10]), image_shape,
                               out / "reconstructions.png", vmax=vmax)
    plots.plot_samples(model.sample(40, rng=rng, mean=True), image_shape, out / "samples.png", vmax=vmax,
                       title="Samples from the prior (decoder means)")


if __name__ == "__main__":
    sys.exit(main())
