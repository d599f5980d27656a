"""The command line: ``minivae train`` (the main job) and the other subcommands.

    minivae train                      # the reference setting on the shipped digits, into minivae-run/
    minivae train --data x.npy --likelihood bernoulli --binarize 0.5 --out my-run

Every subcommand imports what it needs when it runs, so ``minivae --help`` starts at once.

How a command ends. Success exits 0. Anything a user can cause or meet, a bad option, a file that
is missing, damaged or in another encoding, a folder that cannot be written, a full disk, training
that diverged, ends in exactly one line on stderr, ``minivae COMMAND: error: ...``, and a non-zero
exit code (``EXIT_USAGE`` for bad options and bad input, ``EXIT_FAULT`` for the rest). SIGINT
(Ctrl-C) and SIGTERM (a batch scheduler's stop) end in one line ``minivae COMMAND: interrupted by
...`` and 128 + the signal's number (130, 143). ``minivae train`` first keeps the work done so far:
the best parameters, the history and a ``summary.json`` that says it was interrupted and where; and
``minivae train --resume --out RUN`` continues such a run. A traceback means a bug in minivae; set
``MINIVAE_TRACEBACK=1`` to see the traceback of any error.

What ``minivae train`` writes. Every file goes to a temporary name first and is renamed into place
only when all of them are complete (:class:`minivae.files.OutputFolder`), ``summary.json`` last, so a
run that fails or is interrupted before it has anything to keep leaves the previous run's files as
they were; files of an earlier run that this run does not write again are removed, and
``summary.json`` lists the files of its run.
"""

import argparse
import functools
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from .reference import REFERENCE

DEFAULT_OUT = "minivae-run"
EXIT_FAULT = 1  # the run met a fault: a file it cannot write, a full disk, training that diverged
EXIT_USAGE = 2  # a bad option, a path to nothing, bad input data (argparse's own code for a bad option)
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # both end a run the same way, keeping its work
COMPILER_RETRY_SECONDS = 0.2  # an interruption that comes while numba loads or compiles: sent again after this

# The categorical decoder has input_dim × num_values outputs (and as many columns in its last weight
# matrix), so a stray large integer in a file would ask for gigabytes: 256 is an 8-bit image's range.
MAX_CATEGORICAL_VALUES = 256
# The largest model `minivae train` builds: 10**8 parameters are 400 MB in float32, and training keeps
# about four times that (gradients, two optimizer moments, the weight average). The reference model has
# 0.44 million; a categorical decoder for MNIST with 256 values, 51 million. A transposed file (its
# examples in columns) or a typo in --hidden asks for far more.
MAX_PARAMETERS = 10**8

# What `minivae train` may write in its folder; those of an earlier run not written again are removed.
TRAIN_FIGURES = ("curves.png", "reconstructions.png", "samples.png", "latent.png")
TRAIN_OUTPUTS = ("params.npz", "optimizer.npz", "history.json", "summary.json") + TRAIN_FIGURES
RESUME_MAY_CHANGE = ("out", "quiet", "no_figures", "resume", "epochs")  # every other setting is the run's

SPLITS = ("shuffled", "file-order")
SPLIT_STREAM = 3  # the split of --data shuffles with default_rng([seed, 3]), apart from training's streams


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
                    "stopping on the validation -ELBO with patience 20. Ctrl-C or SIGTERM stops the run "
                    "and keeps the best parameters so far.")
    data = train.add_argument_group("data")
    data.add_argument("--data", metavar="PATH",
                      help="your own data (.npy, .npz, .csv, .csv.gz, .txt, IDX), one example per row; split "
                           "into train/val/test by --val-fraction and --test-fraction, shuffled with --seed "
                           "(default: the shipped digits and their standard split)")
    data.add_argument("--npz-key", metavar="KEY", help="the array to use from .npz files (default: 'x', or "
                                                      "the only array)")
    data.add_argument("--val-data", metavar="PATH", help="a separate validation file (with --data)")
    data.add_argument("--test-data", metavar="PATH", help="a separate test file (with --data), e.g. MNIST's")
    data.add_argument("--labels", metavar="PATH",
                      help="class labels of the rows of --data, one per row (any of the formats above); "
                           "they colour the latent figure")
    data.add_argument("--label-column", type=int, metavar="INDEX",
                      help="the column of every data file that holds the class label (0 the first, -1 the "
                           "last); it is taken out of the data")
    data.add_argument("--val-fraction", type=float, metavar="F",
                      help="share of --data for validation (default 0.1; 0 with --val-data)")
    data.add_argument("--test-fraction", type=float, metavar="F",
                      help="share of --data for the test (default 0.1; 0 with --test-data)")
    data.add_argument("--split", choices=SPLITS,
                      help="how --data is split: rows shuffled with --seed (default), or in file order")
    data.add_argument("--binarize", type=float, metavar="THRESHOLD",
                      help="scale to [0, 1] and threshold (for --likelihood bernoulli)")
    data.add_argument("--image-shape", metavar="HxW",
                      help="shape of one image for the figures, e.g. 28x28 (default: square if possible)")
    model = train.add_argument_group("model")
    model.add_argument("--likelihood", choices=["categorical", "bernoulli", "gaussian"], default="categorical")
    model.add_argument("--num-values", type=int,
                       help="values per dimension for categorical (default: 17 for the digits, max+1 for "
                            f"--data; at most {MAX_CATEGORICAL_VALUES})")
    model.add_argument("--latent", default=str(REFERENCE.latent_dim), metavar="L[,L2]",
                       help=f"latent dimensions (default {REFERENCE.latent_dim}); two sizes, e.g. 16,8, make a "
                            f"two-level VAE with z1 of L and z2 of L2 dimensions")
    model.add_argument("--prior", default="standard", metavar="PRIOR",
                       help="the prior: standard (N(0, I)), mog:K (a learned mixture of K Gaussians) or vamp:K "
                            "(a VampPrior with K pseudo-inputs started at training examples) (default %(default)s)")
    model.add_argument("--hidden", default=",".join(map(str, REFERENCE.hidden)),
                       help="hidden widths, comma separated; '' for a linear model (default %(default)s)")
    model.add_argument("--activation", choices=["leaky_relu", "relu", "tanh", "sigmoid"], default="leaky_relu")
    model.add_argument("--variance", type=float, default=1.0, help="Gaussian σ² (initial value if learned)")
    model.add_argument("--learn-variance", action="store_true", help="learn the Gaussian σ²")
    model.add_argument("--beta", type=float, default=1.0, help="KL weight in the training loss (default %(default)s)")
    model.add_argument("--objective", default="elbo", metavar="OBJECTIVE",
                       help="the training objective: elbo, or iwae:K (the importance-weighted bound with K samples) "
                            "(default %(default)s)")
    model.add_argument("--warmup", type=int, metavar="EPOCHS",
                       help="KL warm-up: the KL's weight rises linearly from 0 to --beta over this many epochs")
    model.add_argument("--free-bits", type=float, metavar="NATS",
                       help="free bits: a floor of NATS per latent dimension on the batch-averaged KL")
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
    output.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --out with its recorded settings, parameters and "
                             "optimizer state (give only --out, and --epochs to raise the limit)")
    train.set_defaults(run=run_train)
    from . import compare
    compare.add_parser(subcommands)

    from . import notebooks
    notebooks.add_parser(subcommands)

    from . import bench
    bench.add_parser(subcommands)

    from . import variants
    variants.add_parser(subcommands)
    from .exercises import cli as exercises_cli
    exercises_cli.add_parser(subcommands)
    return parser


# --------------------------------------------------------------------------------------------------
# How every command ends: one line and an exit code
# --------------------------------------------------------------------------------------------------

class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM; the message says what was kept."""


class Stop(BaseException):
    """SIGINT or SIGTERM in a command with nothing to keep (compare, bench, notebooks): not a
    KeyboardInterrupt, so that no ``fit`` inside it catches it and carries on with the next model."""


class _Interrupts:
    """While active, SIGINT and SIGTERM raise KeyboardInterrupt; remembers the first that came.

    Python turns SIGINT into KeyboardInterrupt by itself but lets SIGTERM kill the process at once,
    losing the run; here both take the same path, so that ``fit`` can stop and keep its work.
    """

    def __init__(self):
        self.signal = None
        self.exception = KeyboardInterrupt  # what a signal raises; Stop for commands without fit's keeping
        self._previous = {}

    def _handler(self, number, frame):
        if self.signal is None:
            self.signal = number
        if _in_compiler(frame):
            # Raised inside numba, the interruption can be lost: llvmlite's callbacks run under ctypes,
            # which prints and drops exceptions, and numba's import runs code through exec(), after
            # which CPython ends the process by SIGINT whatever it exits with. Send it again shortly.
            timer = threading.Timer(COMPILER_RETRY_SECONDS, os.kill, (os.getpid(), number))
            timer.daemon = True
            timer.start()
            return
        raise self.exception

    def __enter__(self):
        self.signal = None
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for number in INTERRUPT_SIGNALS:
                self._previous[number] = signal.signal(number, self._handler)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    @property
    def name(self):
        """The signal that came ("SIGINT" when none was recorded: a KeyboardInterrupt from elsewhere)."""
        return signal.Signals(self.signal or signal.SIGINT).name

    @property
    def exit_code(self):
        """128 + the signal's number, the shell's convention (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + int(self.signal or signal.SIGINT)


_interrupts = _Interrupts()


def _in_compiler(frame):
    """Whether ``frame`` or a caller is numba's or llvmlite's Python code: importing numba, or
    compiling a kernel at its first call. Compiled kernels run without Python frames."""
    while frame is not None:
        name = frame.f_code.co_filename.replace(os.sep, "/")
        if "/llvmlite/" in name or "/numba/" in name:
            return True
        frame = frame.f_back
    return False


@contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM back (they are delivered afterwards) while files are renamed into place."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPT_SIGNALS)


def _one_line(text):
    """``text`` with its line breaks and runs of spaces collapsed, for a one-line message."""
    return " ".join(str(text).split())


def _describe_error(error):
    """(exit code, one-line message) for an expected error, or None for a bug (shown as a traceback)."""
    import zipfile

    from .files import describe_os_error
    from .training import TrainingError

    if isinstance(error, Interrupted):
        return _interrupts.exit_code, str(error)
    if isinstance(error, (KeyboardInterrupt, Stop)):
        return _interrupts.exit_code, f"interrupted by {_interrupts.name}"
    if isinstance(error, TrainingError):
        return EXIT_FAULT, f"training diverged: {error}"
    if isinstance(error, (ValueError, TypeError)):  # includes UnicodeDecodeError
        return EXIT_USAGE, str(error)
    if isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):  # a path given wrong
        return EXIT_USAGE, str(error) if error.errno is None else describe_os_error(error)
    if isinstance(error, OSError):  # unreadable files, read-only folders, a full disk
        return EXIT_FAULT, describe_os_error(error)
    if isinstance(error, (EOFError, zipfile.BadZipFile)):  # a truncated archive read outside datasets
        return EXIT_FAULT, f"a file ended early or is damaged: {error}"
    if isinstance(error, MemoryError):
        return EXIT_FAULT, "out of memory; try a smaller --batch-size, model or data set"
    return None


def main(argv=None):
    """Run the ``minivae`` command; returns 0 on success, else exits with one line on stderr.

    Raises
    ------
    SystemExit
        with ``EXIT_USAGE``, ``EXIT_FAULT`` or 128 + a signal's number, after printing one line.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    # Warnings (NumPy's overflow warnings as a run diverges) are held back: shown after a success,
    # dropped after a failure, whose one line says what happened.
    with _interrupts, warnings.catch_warnings(record=True) as caught:
        _interrupts.exception = KeyboardInterrupt if args.command == "train" else Stop
        try:
            _check_output_options(args)
            code = args.run(args)
        except (Exception, KeyboardInterrupt, Stop) as error:
            described = _describe_error(error)
            if described is None or os.environ.get("MINIVAE_TRACEBACK"):
                raise
            code, message = described
            label = "" if isinstance(error, (Interrupted, KeyboardInterrupt, Stop)) else "error: "  # not failed
            parser.exit(code, f"minivae {args.command}: {label}{_one_line(message)}\n")
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return code


def _check_output_options(args):
    """Check, before any work, that the folders and files a command will write can be written."""
    from . import files

    if args.command == "compare":
        _check_compare_options(args)
    if args.command in ("train", "compare"):
        _require(args.seed >= 0, f"--seed must be a non-negative integer; got {args.seed}")
    if args.command in ("train", "compare", "variants"):
        files.check_output_folder(args.out, "--out")
    elif args.command == "notebooks":
        files.check_output_folder(args.out_dir, "DIR")
    elif args.command == "bench" and args.json:
        path = Path(args.json)
        if path.is_dir():
            raise ValueError(f"--json {args.json!r} is a folder; give a file name such as bench.json")
        files.check_output_folder(path.parent, "the folder of --json")


def _check_compare_options(args):
    """The options of ``minivae compare`` that it would otherwise meet only after minutes of training."""
    from . import compare

    if args.linear_steps is not None:
        _require(args.linear_steps >= 1, f"--linear-steps must be a positive integer; got {args.linear_steps}")
    if args.train_run is None:
        return
    try:
        summary = json.loads((Path(args.train_run) / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        summary = None  # compare.categorical_from_run says what --train-run must be
    except (ValueError, OSError) as error:
        raise ValueError(f"--train-run {args.train_run!r}: its summary.json cannot be read ({error})") from None
    if summary is not None:
        _require(isinstance(summary, dict) and not summary.get("interrupted"),
                 f"--train-run {args.train_run!r} was interrupted (its summary.json says so) and has no test "
                 f"numbers; give a finished run")
        missing = [key for key in ("test_nelbo", "test_nll") if key not in summary]
        _require(not missing, f"--train-run {args.train_run!r}: its summary.json has no {', '.join(missing)}; "
                              f"give the --out folder of a finished `minivae train` run")
    compare.categorical_from_run(args.train_run)


# --------------------------------------------------------------------------------------------------
# minivae train: the options, checked before anything else
# --------------------------------------------------------------------------------------------------

def _require(condition, message):
    if not condition:
        raise ValueError(message)


def parse_hidden(text):
    """``"256,256"`` -> (256, 256); ``""`` -> () (a linear model)."""
    try:
        hidden = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--hidden must be comma-separated positive integers such as 256,256 (or '' for a "
                         f"linear model); got {text!r}") from None
    _require(all(h >= 1 for h in hidden), f"--hidden widths must be positive; got {text!r}")
    return hidden


def parse_image_shape(text):
    """``"28x28"`` -> (28, 28)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        shape = ()
    _require(len(shape) == 2 and min(shape) >= 1,
             f"--image-shape must be HEIGHTxWIDTH with positive integers, such as 28x28; got {text!r}")
    return shape


def check_train_options(args):
    """Every option of ``minivae train`` that can be checked without the data; a ValueError names it."""
    latent = parse_latent(args.latent)
    prior, objective = parse_model_family(args)
    for option in ("epochs", "batch_size", "patience", "val_samples", "test_samples"):
        value = getattr(args, option)
        _require(value >= 1, f"--{option.replace('_', '-')} must be a positive integer; got {value}")
    for option in ("lr", "variance"):
        value = getattr(args, option)
        _require(math.isfinite(value) and value > 0, f"--{option} must be a positive number; got {value}")
    _require(math.isfinite(args.beta) and args.beta >= 0, f"--beta must be a number ≥ 0; got {args.beta}")
    _require(0 <= args.ema < 1, f"--ema must be a decay in [0, 1) (0: no averaging); got {args.ema}")
    if args.binarize is not None:
        _require(math.isfinite(args.binarize), f"--binarize must be a finite threshold; got {args.binarize}")
    if args.num_values is not None:
        _require(2 <= args.num_values <= MAX_CATEGORICAL_VALUES,
                 f"--num-values must be from 2 to {MAX_CATEGORICAL_VALUES} (MAX_CATEGORICAL_VALUES); "
                 f"got {args.num_values}")
    for option in ("val_fraction", "test_fraction"):
        value = getattr(args, option)
        if value is not None:
            _require(0 <= value < 1, f"--{option.replace('_', '-')} must lie in [0, 1); got {value}")
    fractions = (args.val_fraction or 0) + (args.test_fraction or 0)
    _require(fractions < 1, f"--val-fraction + --test-fraction must be below 1 to leave training rows; got "
                            f"{args.val_fraction} + {args.test_fraction}")
    if args.data is None:
        for option in ("val_data", "test_data", "labels", "label_column", "npz_key", "val_fraction",
                       "test_fraction", "split"):
            _require(getattr(args, option) is None,
                     f"--{option.replace('_', '-')} applies to --data; the shipped digits come with their "
                     f"labels and their standard split")
        if args.likelihood == "bernoulli" and args.binarize is None:
            raise ValueError("the digits take values 0..16; give --binarize THRESHOLD (e.g. 0.5) for "
                             "--likelihood bernoulli")
    for option, separate in (("val_fraction", "val_data"), ("test_fraction", "test_data")):
        _require(getattr(args, option) is None or getattr(args, separate) is None,
                 f"give --{option.replace('_', '-')} or --{separate.replace('_', '-')}, not both")
    _require(args.labels is None or args.label_column is None, "give --labels or --label-column, not both")
    data_files = [path for path in (args.data, args.val_data, args.test_data) if path is not None]
    _require(args.npz_key is None or any(path.lower().endswith(".npz") for path in data_files),
             f"--npz-key applies to .npz files; {', '.join(map(repr, data_files))} holds none")
    if args.warmup is not None:
        _require(args.warmup <= args.epochs, f"--warmup {args.warmup} is longer than the run (--epochs "
                                             f"{args.epochs}): the KL would never reach its full weight")
    _require(len(latent) == 1 or not str(args.prior).startswith("vamp"),
             "--prior vamp:K takes one latent size: the VampPrior mixes posteriors of the data's encoder")
    hidden = parse_hidden(args.hidden)
    image_shape = None if args.image_shape is None else parse_image_shape(args.image_shape)
    return hidden, image_shape, latent


def parse_latent(text):
    """--latent: one size, or two (a two-level VAE), as a tuple of positive integers."""
    try:
        sizes = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"--latent takes one or two positive integers separated by a comma (16 or 16,8); "
                         f"got {text!r}") from None
    _require(1 <= len(sizes) <= 2 and all(size >= 1 for size in sizes),
             f"--latent takes one or two positive integers separated by a comma (16 or 16,8); got {text!r}")
    return sizes


def parse_model_family(args):
    """--prior, --objective, --warmup, --free-bits checked; the prior's spec and the objective object."""
    from .objectives import make_objective
    from .priors import make_prior

    _require(args.warmup is None or args.warmup >= 1, f"--warmup must be a positive number of epochs; got "
                                                      f"{args.warmup}")
    _require(args.free_bits is None or (math.isfinite(args.free_bits) and args.free_bits >= 0),
             f"--free-bits must be a number of nats ≥ 0; got {args.free_bits}")
    try:
        prior = make_prior(args.prior)  # the spec is checked here; a VampPrior gets its data when the model is built
    except ValueError as error:
        raise ValueError(f"--prior: {error}") from None
    _require(args.free_bits is None or hasattr(prior, "kl_per_dimension"),
             f"--free-bits needs a prior whose KL splits over latent dimensions in closed form (standard); "
             f"got --prior {args.prior}")
    try:
        objective = make_objective(args.objective, beta=args.beta, warmup=args.warmup, free_bits=args.free_bits)
    except ValueError as error:
        raise ValueError(f"--objective: {error}") from None
    return args.prior, objective


# --------------------------------------------------------------------------------------------------
# minivae train: the data
# --------------------------------------------------------------------------------------------------

def _load_user_file(path, args, option):
    """(x, labels or None) from one of the user's files, with its values checked for --dtype."""
    from . import datasets

    key = args.npz_key if path.lower().endswith(".npz") else None
    x = datasets.load_array(path, key)
    datasets.check_values(x, f"{option} {path!r}", args.dtype)  # rows and columns as in the file
    columns = list(range(x.shape[1]))  # the file's column of each column of x
    labels = None
    if args.label_column is not None:
        x, labels = datasets.split_label_column(x, args.label_column, f"{option} {path!r}")
        del columns[args.label_column % len(columns)]
    check_for_likelihood(x, f"{option} {path!r}", args, columns)
    return x, labels


def load_training_data(args):
    """Train/val/test arrays, labels (dict of arrays, or None) and the default image shape.

    The shipped digits keep their standard split (file order). A user's ``--data`` is split by
    ``--val-fraction`` and ``--test-fraction`` (default 0.1 each, 0 where ``--val-data`` or
    ``--test-data`` give the part), its rows shuffled with ``--seed`` unless ``--split file-order``.
    """
    import numpy as np

    from . import datasets

    if args.data is None:
        splits = {name: datasets.load_digits(name) for name in ("train", "val", "test")}
        x = {name: xy[0] for name, xy in splits.items()}
        labels = {name: xy[1] for name, xy in splits.items()}
        return x, labels, datasets.DIGITS_IMAGE_SHAPE

    data, data_labels = _load_user_file(args.data, args, "--data")
    if args.labels is not None:
        data_labels = datasets.load_labels(args.labels, n=data.shape[0])
    val_fraction = args.val_fraction if args.val_fraction is not None else (0 if args.val_data else 0.1)
    test_fraction = args.test_fraction if args.test_fraction is not None else (0 if args.test_data else 0.1)
    rng = None if args.split == "file-order" else np.random.default_rng([args.seed, SPLIT_STREAM])
    parts = datasets.split(data, data_labels, val_fraction=val_fraction, test_fraction=test_fraction, rng=rng)
    if data_labels is None:
        x, labels = parts, {name: None for name in parts}
    else:
        x = {name: xy[0] for name, xy in parts.items()}
        labels = {name: xy[1] for name, xy in parts.items()}
    for name, path in (("val", args.val_data), ("test", args.test_data)):
        if path is not None:
            option = f"--{name}-data"
            x[name], labels[name] = _load_user_file(path, args, option)
            _require(x[name].shape[1] == data.shape[1],
                     f"{option} {path!r} has {x[name].shape[1]} columns; --data {args.data!r} has "
                     f"{data.shape[1]}")
    for name, option in (("val", "--val-fraction"), ("test", "--test-fraction")):
        _require(len(x[name]) > 0, f"no {'validation' if name == 'val' else 'test'} rows: {args.data!r} has "
                                   f"{_rows(data.shape[0])} and {option} leaves none; raise {option} or give "
                                   f"--{name}-data")
    if all(part is None for part in labels.values()):
        labels = None
    side = int(round(np.sqrt(data.shape[1])))
    image_shape = (side, side) if side * side == data.shape[1] else None
    return x, labels, image_shape


def _rows(n):
    return f"{n} row" + ("" if n == 1 else "s")


def check_for_likelihood(x, name, args, columns):
    """Refuse, naming the row and column (``columns``: the file's column of each column of ``x``) in
    ``name`` (a file), data the decoder cannot take as it is:
    non-integers or negative values for the categorical decoder, values other than 0 and 1 for the
    Bernoulli one (without --binarize), and a largest value that would make the categorical decoder
    larger than ``MAX_CATEGORICAL_VALUES`` values per dimension."""
    import numpy as np

    if args.binarize is not None or args.likelihood == "gaussian":
        return
    if args.likelihood == "bernoulli":
        bad = (x != 0) & (x != 1)
        expected = "only 0 and 1 for --likelihood bernoulli; give --binarize THRESHOLD to threshold it"
    else:
        bad = (x != np.round(x)) | (x < 0)
        expected = ("integers 0, 1, 2, ... for --likelihood categorical; use --likelihood gaussian for real "
                    "values, or --binarize")
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(f"{name}: row {row + 1}, column {columns[column] + 1} holds {x[row, column]:g}; the data must "
                         f"hold {expected}")
    if args.likelihood == "categorical" and args.num_values is None and x.max() + 1 > MAX_CATEGORICAL_VALUES:
        row, column = np.unravel_index(np.argmax(x), x.shape)
        raise ValueError(f"{name}: row {row + 1}, column {columns[column] + 1} holds {x.max():.0f}, so the categorical "
                         f"decoder would need {x.max() + 1:.0f} values per dimension; the limit is "
                         f"{MAX_CATEGORICAL_VALUES} (MAX_CATEGORICAL_VALUES). Check the file for a stray value, "
                         f"or use --likelihood gaussian")


def check_model_size(input_dim, latent_dim, hidden, num_values, n_train):
    """Refuse, before any allocation, a model of more than ``MAX_PARAMETERS`` parameters.

    The encoder maps input_dim -> hidden -> 2 latent_dim and the decoder latent_dim -> reversed
    hidden -> input_dim × num_values (categorical) or input_dim; each layer has in × out + out
    parameters.
    """
    from .vae import network_size

    n_params = network_size(input_dim, latent_dim, hidden, "categorical" if num_values else "gaussian",
                            num_values or 1)
    if n_params > MAX_PARAMETERS:
        shape = f"{n_train} training rows of {input_dim} columns"
        hint = (" Are the examples in the columns of the file? minivae takes one example per row."
                if input_dim > n_train else "")
        raise ValueError(f"this model would have {n_params:.3g} parameters ({4 * n_params / 2**30:.1f} GiB in "
                         f"float32, about four times that while training); the limit is {MAX_PARAMETERS:.0e} "
                         f"(MAX_PARAMETERS). The data: {shape}; --hidden {','.join(map(str, hidden))}, --latent "
                         f"{latent_dim}" + (f", {num_values} values per dimension" if num_values else "")
                         + f".{hint}")


def prepare_for_likelihood(x, args):
    """Binarize if asked; the number of categorical values (None for other likelihoods)."""
    from . import datasets

    if args.binarize is not None:
        top = max(float(part.max()) for part in x.values())
        if top <= 0:
            raise ValueError("the data are all zero or negative; --binarize scales by the largest value")
        x = {name: datasets.binarize(datasets.scale(part, top), args.binarize) for name, part in x.items()}
    if args.likelihood != "categorical":
        return x, None
    if args.num_values is not None:
        return x, args.num_values
    if args.data is None:
        return x, datasets.DIGITS_NUM_VALUES
    largest = max(int(part.max()) for part in x.values())
    if largest + 1 > MAX_CATEGORICAL_VALUES:  # after --binarize, or checked per file already
        raise ValueError(f"the data's largest value is {largest}; the categorical decoder takes at most "
                         f"{MAX_CATEGORICAL_VALUES} values (MAX_CATEGORICAL_VALUES)")
    return x, max(largest + 1, 2)


# --------------------------------------------------------------------------------------------------
# minivae train --resume
# --------------------------------------------------------------------------------------------------

def resumed_arguments(args):
    """The options of the run recorded in ``--out``/summary.json, with this command's --out, --quiet,
    --no-figures and (if given) --epochs; a ValueError if the run cannot be resumed."""
    out = Path(args.out)
    defaults = vars(build_parser().parse_args(["train"]))
    given = [key for key, value in vars(args).items()
             if key not in RESUME_MAY_CHANGE and key in defaults and value != defaults[key]]
    _require(not given, f"--resume takes the settings of the run in --out {str(out)!r}; do not give "
                        f"{', '.join('--' + key.replace('_', '-') for key in given)}")
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ValueError(f"--resume: --out {str(out)!r} holds no {Path(error.filename).name} of a "
                         f"`minivae train` run") from None
    except ValueError as error:
        raise ValueError(f"--resume: the run in {str(out)!r} cannot be read ({error})") from None
    settings = summary.get("settings") if isinstance(summary, dict) else None
    _require(isinstance(settings, dict) and isinstance(history, dict) and "epochs" in history,
             f"--resume: {str(out / 'summary.json')!r} is not the summary of a `minivae train` run")
    resumed = argparse.Namespace(**dict(defaults, **settings))
    for key in RESUME_MAY_CHANGE:
        setattr(resumed, key, getattr(args, key))
    if args.epochs == defaults["epochs"]:
        resumed.epochs = settings.get("epochs", defaults["epochs"])
    done = int(history["epochs"])
    after_training = "during" in (summary.get("interrupted_at") or {})  # stopped in the evaluation or figures
    if not after_training:
        _require(not history.get("stopped_early"),
                 f"--resume: the run in {str(out)!r} stopped early (no better validation -ELBO for "
                 f"{resumed.patience} epochs); there is nothing to resume")
        _require(done < resumed.epochs,
                 f"--resume: the run in {str(out)!r} has finished its {done} epochs; give --epochs above {done} "
                 f"to train it further")
    resumed.run, resumed.command = args.run, args.command
    return resumed, history


def load_resumed_state(out, model_config, optimizer):
    """The model and the optimizer state of the run in ``out``, checked against each other."""
    import numpy as np

    from .vae import VAE

    path = out / "params.npz"
    try:
        model = VAE.load(path)
    except ValueError as error:
        message = str(error)
        raise ValueError(message if str(path) in message else f"{str(path)!r}: {message}") from None
    for key in ("input_dim", "latent_dim", "hidden", "likelihood", "num_values", "dtype"):
        _require(model.config[key] == model_config[key],
                 f"--resume: {str(out / 'params.npz')!r} holds a model with {key}={model.config[key]!r}; "
                 f"the run's settings and data give {model_config[key]!r}")
    path = out / "optimizer.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as archive:
            state = {name: archive[name] for name in archive.files}
        for name, value in state.items():
            key = name.partition("/")[2]
            if name != "t":
                _require(key in model.params and value.shape == model.params[key].shape,
                         f"--resume: {str(path)!r} does not match the parameters in params.npz "
                         f"({name!r} has shape {value.shape})")
        optimizer.load_state_dict(state)
    return model


def merge_histories(before, after):
    """One History of a run resumed after ``before`` (the dict of history.json) and continued by
    ``after`` (the History of the resumed fit): lists joined, epochs renumbered from the first."""
    from .training import History

    done = int(before["epochs"])
    merged = History(**{key: value for key, value in before.items() if key in History.__dataclass_fields__})
    for name, spec in History.__dataclass_fields__.items():  # the per-epoch records: lists, dicts of lists
        joined, more = getattr(merged, name), getattr(after, name)
        if spec.default_factory is list:
            joined.extend(more)
        elif spec.default_factory is dict:
            for key, values in more.items():
                joined.setdefault(key, []).extend(values)
    merged.epochs, merged.steps = done + after.epochs, merged.steps + after.steps
    merged.seconds += after.seconds
    if after.best_val_loss is not None and (merged.best_val_loss is None or after.best_val_loss < merged.best_val_loss):
        merged.best_epoch, merged.best_val_loss = done + after.best_epoch, after.best_val_loss
    if after.epochs:
        merged.stopped_early = after.stopped_early
    merged.interrupted = after.interrupted
    merged.interrupted_at = None
    if after.interrupted_at is not None:
        merged.interrupted_at = dict(after.interrupted_at, epoch=done + after.interrupted_at["epoch"])
    return merged


# --------------------------------------------------------------------------------------------------
# minivae train: the run
# --------------------------------------------------------------------------------------------------

def run_train(args):
    import numpy as np

    from . import optim
    from .files import OutputFolder, describe_os_error
    from .hierarchical import TwoLevelVAE
    from .priors import make_prior
    from .training import History, TrainingError, fit
    from .vae import VAE

    start = time.perf_counter()
    previous = None  # the history of the run being resumed
    if args.resume:
        args, previous = resumed_arguments(args)
    hidden, image_shape_option, latent = check_train_options(args)
    out = Path(args.out)  # checked by main: a folder we can write to
    x, labels, image_shape = load_training_data(args)
    x, num_values = prepare_for_likelihood(x, args)
    input_dim = x["train"].shape[1]
    if image_shape_option is not None:
        _require(image_shape_option[0] * image_shape_option[1] == input_dim,
                 f"--image-shape {args.image_shape} has {image_shape_option[0] * image_shape_option[1]} pixels; "
                 f"the data has {input_dim} columns")
        image_shape = image_shape_option
    check_model_size(input_dim, latent[0], hidden, num_values, len(x["train"]))
    _, objective = parse_model_family(args)
    prior = args.prior
    if prior.startswith("vamp"):
        from .priors import VampPrior
        prior = VampPrior(make_prior(prior).n_components, data=x["train"])
    options = dict(hidden=hidden, activation=args.activation, likelihood=args.likelihood,
                   num_values=num_values or 17, variance=args.variance, learn_variance=args.learn_variance,
                   prior=prior, beta=args.beta, seed=args.seed, dtype=args.dtype)
    if len(latent) == 2:
        model = TwoLevelVAE(input_dim, latent, **options)
    else:
        model = VAE(input_dim, latent[0], **options)
    optimizer = optim.make_optimizer(args.optimizer, args.lr)
    done = 0  # epochs finished before this command
    if previous is not None:
        model = load_resumed_state(out, model.config, optimizer)
        kept = {key: value.copy() for key, value in model.params.items()}  # the best so far
        done = int(previous["epochs"])
    log = (lambda *a: None) if args.quiet else functools.partial(print, flush=True)
    log(f"minivae train: {model}")
    log(f"  data: {args.data or 'digits'} train {len(x['train'])}, val {len(x['val'])}, "
        f"test {len(x['test'])}; {optimizer}, batch {args.batch_size}, patience {args.patience}")
    if previous is not None:
        best = previous.get("best_val_loss")
        to_train = args.epochs > done and not previous.get("stopped_early")
        log(f"  resuming after epoch {done}" + ("" if best is None else f" (best {best:.3f} at epoch "
                                                                         f"{previous['best_epoch']})")
            + ("; the epochs below count from the resumed start" if to_train else
               "; the training is complete: the test numbers and the figures follow"))

    rng = np.random.default_rng(args.seed if done == 0 else [args.seed, done])  # a resumed run: a new stream
    try:
        if args.epochs > done and not (previous is not None and previous.get("stopped_early")):
            if getattr(objective, "warmup", None) is not None and done:
                objective.warmup_start = min(1.0, done / objective.warmup)  # a resumed warm-up goes on
                objective.warmup = max(1, objective.warmup - done)
            history = fit(model, x["train"], x["val"], objective=objective, epochs=args.epochs - done,
                          batch_size=args.batch_size, optimizer=optimizer, patience=args.patience, rng=rng,
                          val_samples=args.val_samples, ema=args.ema or None, verbose=not args.quiet)
        else:  # resuming a run whose training was complete, interrupted in its evaluation or figures
            history = History()
    except TrainingError as error:
        raise TrainingError(f"{error} Nothing written to {str(out)!r}, which keeps what it held.") from None
    if previous is not None:
        new_epochs = history.epochs
        history = merge_histories(previous, history)
        if history.best_epoch is not None and history.best_epoch <= done:
            model.set_params(kept)  # no resumed epoch beat the best before the interruption
        if history.interrupted and new_epochs == 0:
            history.interrupted_at = dict(history.interrupted_at, epoch=done + 1)
    train_seconds = time.perf_counter() - start
    interrupted_at = history.interrupted_at if history.interrupted else None  # fit keeps its work on Ctrl-C
    if interrupted_at is not None and history.epochs == 0:
        raise Interrupted(f"interrupted by {_interrupts.name} during the first epoch; nothing to keep, nothing "
                          f"written to {str(out)!r}, which keeps what it held")

    summary = {
        "data": args.data or "digits",
        "n_train": len(x["train"]), "n_val": len(x["val"]), "n_test": len(x["test"]),
        "interrupted": interrupted_at is not None,
        "resumed_after_epoch": done or None,
    }
    if interrupted_at is not None:
        summary["interrupted_by"] = _interrupts.name
        summary["interrupted_at"] = interrupted_at
    else:
        try:
            summary.update(evaluate(model, x["test"], args.test_samples, args.seed))
        except KeyboardInterrupt:
            interrupted_at = {"during": "test evaluation"}
            summary.update(interrupted=True, interrupted_by=_interrupts.name, interrupted_at=interrupted_at)
    summary.update({
        "val_best_loss": history.best_val_loss,
        "val_loss_name": history.val_loss_name,
        **({"val_best_nelbo": history.best_val_loss} if history.val_loss_name == "-ELBO" else {}),
        "best_epoch": history.best_epoch,
        "epochs": history.epochs,
        "steps": history.steps,
        "seconds": train_seconds,
        "n_params": model.n_params,
        "config": model.config,
        "settings": {key: value for key, value in vars(args).items() if key not in ("run", "command")},
    })

    folder = OutputFolder(out, owned=TRAIN_OUTPUTS)
    writing = "params.npz"  # what is being written, for the message if the disk says no
    try:
        model.save(folder.path("params.npz"))
        writing = "optimizer.npz"
        np.savez(folder.path("optimizer.npz"), **optimizer.state_dict())
        writing = "history.json"
        folder.write_text("history.json", json.dumps(history.to_dict(), indent=1))
        if not args.no_figures and interrupted_at is None:
            writing = "the figures"
            try:
                write_train_figures(model, history, x, labels, image_shape, folder,
                                    np.random.default_rng([args.seed, 2]))
            except KeyboardInterrupt:  # the run is complete: keep it, without the figures
                for name in TRAIN_FIGURES:
                    folder.forget(name)
                interrupted_at = {"during": "figures"}
                summary.update(interrupted=True, interrupted_by=_interrupts.name, interrupted_at=interrupted_at)
        writing = "summary.json"
        summary["files"] = folder.names + ["summary.json"]
        summary["seconds_total"] = time.perf_counter() - start
        folder.write_text("summary.json", json.dumps(summary, indent=2))
        writing = "the files into place"
        with _signals_deferred():
            written = folder.commit(last="summary.json")
    except OSError as error:
        folder.discard()
        raise OSError(error.errno, f"could not write {writing} in {str(out)!r}: {describe_os_error(error)}; "
                                   f"nothing written, the folder keeps what it held") from error
    except BaseException:
        folder.discard()
        raise
    names = ", ".join(path.name for path in written)
    if interrupted_at is not None:
        where = (f"at epoch {interrupted_at['epoch']}, step {interrupted_at.get('step')}"
                 if "epoch" in interrupted_at else f"during the {interrupted_at['during']}")
        kept = "the last" if summary["best_epoch"] is None else f"the best (epoch {summary['best_epoch']})"
        raise Interrupted(f"interrupted by {_interrupts.name} {where}; kept {kept} parameters of "
                          f"{history.epochs} finished epochs in {out}/: {names}")
    print(f"test -ELBO {summary['test_nelbo']:.2f} nats, test NLL (K={args.test_samples}) "
          f"{summary['test_nll']:.2f} nats ({summary['test_nll_bits_per_dim']:.3f} bits/dim), "
          f"rate {summary['test_rate']:.2f}, active units {_units(summary['active_units'], model)}; "
          f"{history.epochs} epochs in {train_seconds:.1f} s")
    print(f"wrote {out}/: {names}")
    return 0


def evaluate(model, test, test_samples, seed):
    """The test numbers of ``summary.json``: -ELBO, its rate and distortion, the NLL, active units.

    Returns
    -------
    dict, nats per example; ``test_nll`` is -log p(x) estimated with K = ``test_samples``
    importance samples, ``test_nll_bits_per_dim`` the same in bits per data dimension
    """
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    reconstruction, kl = model.elbo_parts(test, n_samples=REFERENCE.elbo_samples, rng=rng)
    nll = -model.log_likelihood(test, n_samples=test_samples, rng=rng)
    return {
        "test_nelbo": float(np.mean(kl - reconstruction)),
        "test_nll": float(np.mean(nll)),
        "test_nll_bits_per_dim": float(np.mean(nll) / (test.shape[1] * np.log(2))),
        "test_rate": float(np.mean(kl)),
        "test_distortion": float(-np.mean(reconstruction)),
        "test_nll_samples": test_samples,
        "test_elbo_samples": REFERENCE.elbo_samples,
        "active_units": _json_units(model.active_units(test)),
    }


def _json_units(units):
    """Active units as JSON: a number, or a list with one number per level."""
    return list(units) if isinstance(units, tuple) else units


def _units(units, model):
    """'12/16', or for a two-level VAE '14/16 and 3/8'."""
    if isinstance(units, list):
        return " and ".join(f"{n}/{size}" for n, size in zip(units, model.latent_dims))
    return f"{units}/{model.latent_dim}"


def write_train_figures(model, history, x, labels, image_shape, folder, rng):
    """curves.png, latent.png and (for images) reconstructions.png and samples.png, into ``folder``
    (a :class:`minivae.files.OutputFolder`)."""
    from . import plots

    test = x["test"]
    plots.plot_history(history, folder.path("curves.png"), title="Training and validation −ELBO")
    mu, _ = model.encode(test)
    test_labels = None if labels is None else labels["test"]
    units = _units(_json_units(model.active_units(test)), model)
    level = " (z1)" if hasattr(model, "latent_dims") else ""
    plots.plot_latent(mu, test_labels, folder.path("latent.png"),
                      title=f"Posterior means of the test set{level}; active units {units}")
    if image_shape is None:
        return
    vmax = float(max(test.max(), 1))
    plots.plot_reconstructions(test[:10], model.reconstruct(test[:10]), image_shape,
                               folder.path("reconstructions.png"), vmax=vmax)
    plots.plot_samples(model.sample(40, rng=rng, mean=True), image_shape, folder.path("samples.png"), vmax=vmax,
                       title=f"Samples from the prior, {model.prior.name}" + (
                           f" with {model.prior.n_components} components" if hasattr(model.prior, "n_components")
                           else "") + " (decoder means)")


if __name__ == "__main__":
    sys.exit(main())
