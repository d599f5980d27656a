"""Training: minibatch stochastic optimisation of an objective (the negative ELBO), with early stopping.

:func:`fit` shuffles the training set every epoch, takes one optimizer step per minibatch with the
gradients of the objective (:class:`minivae.objectives.ELBO` unless told otherwise), keeps a moving
average of the weights (Polyak averaging), measures the validation loss after each epoch (the
objective's own bound: the -ELBO, or -L_k for the IWAE objective), and stops when it has not improved
for ``patience`` epochs, restoring the parameters of the best epoch. Its
defaults are the reference setting of :mod:`minivae.reference`, the same as ``minivae train``'s.

It uses only public contracts: the model's ``params``, ``check_x``, ``elbo`` and ``backend``; the
objective's ``draw_noise``, ``loss_and_grads`` and (optional) ``validation_loss``; the optimizer's
``step``.
"""

import contextlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import backend as backends
from .checks import check_rng, positive_int
from .objectives import ELBO
from .optim import Optimizer, make_optimizer
from .reference import REFERENCE


class TrainingError(RuntimeError):
    """Training produced a non-finite loss. The model holds the best parameters found before it."""


@dataclass
class History:
    """What happened during :func:`fit`. Epochs are numbered from 1, as the progress lines print them.

    Attributes
    ----------
    train_loss : list of float, the mean training loss of each epoch (over its examples), nats
    train_rate, train_distortion : list of float, the mean KL and -log p(x|z) of each epoch, when the
        objective reports them
    train_stats : dict name -> list of float, every other per-batch figure the objective reports
        (the IWAE bound's effective sample size, say), averaged over each epoch's examples
    active_units : list of int, the active latent dimensions after each epoch (on the validation
        data; see :meth:`minivae.VAE.active_units`)
    val_loss : list of float, the validation loss after each epoch (empty without validation data):
        the objective's ``validation_loss``, the -ELBO by default
    val_loss_name : str, what val_loss measures: "-ELBO", or "-L_k" for ``IWAE(k)``
    best_epoch : int or None, the epoch (1-based) whose parameters the model holds at the end
    best_val_loss : float or None, val_loss[best_epoch - 1]
    epochs : int, the number of epochs run (completed)
    steps : int, the number of optimizer steps taken
    seconds : float, wall-clock time of the whole fit
    stopped_early : bool, whether patience ran out before ``epochs``
    interrupted : bool, whether a KeyboardInterrupt (Ctrl-C) ended the fit
    interrupted_at : dict or None, ``{"epoch": E, "step": S}`` (1-based) where it was interrupted;
        step 0 means before the first step of epoch E (epoch E - 1 and its validation had finished,
        or were being validated)
    """

    train_loss: list = field(default_factory=list)
    train_rate: list = field(default_factory=list)
    train_distortion: list = field(default_factory=list)
    train_stats: dict = field(default_factory=dict)
    active_units: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_loss_name: str = "-ELBO"
    best_epoch: int = None
    best_val_loss: float = None
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    interrupted: bool = False
    interrupted_at: dict = None

    def to_dict(self):
        """A JSON-serialisable dict of the fields."""
        return asdict(self)


def fit(model, x_train, x_val=None, objective=None, epochs=REFERENCE.max_epochs, batch_size=REFERENCE.batch_size,
        optimizer=None, patience=REFERENCE.patience, rng=None, val_samples=REFERENCE.val_samples,
        ema=REFERENCE.ema, backend=None, verbose=True, callback=None):
    """Train ``model`` on ``x_train`` by minibatch gradient descent on ``objective``.

    The defaults are the reference setting (:data:`minivae.reference.REFERENCE`), as ``minivae train``
    runs it: Adamax 1e-3, batch 64, patience 20, weight averaging with decay 0.999, one sample of z
    per validation example.

    Parameters
    ----------
    model : :class:`minivae.VAE`
    x_train : (N, input_dim) array
    x_val : (M, input_dim) array or None; with it, the validation loss is measured after every epoch
        and drives early stopping; without it, all ``epochs`` run and the last parameters (or their
        average) are kept
    objective : the loss to minimise, anything with ``draw_noise(model, n, rng)`` and
        ``loss_and_grads(model, x, noise) -> (loss, grads, stats)`` (default ``model.objective()``,
        the negative ELBO with the model's β; see :mod:`minivae.objectives`); if it has
        ``validation_loss(model, x, n_samples, rng)``, that is what is validated
    epochs : int, the largest number of passes over x_train
    batch_size : int; the last minibatch of an epoch may be smaller
    optimizer : :class:`minivae.optim.Optimizer` (default Adamax with lr 1e-3, the reference setting)
    patience : int or None; stop after this many epochs without a better validation loss (the
        objective's ``validation_loss``: the -ELBO, or -L_k for IWAE(k))
        (None: never stop early)
    rng : numpy.random.Generator for shuffling and for the noise of every step (default: a generator
        seeded from the model's seed, so that the same model seed gives identical parameters)
    val_samples : int, draws per validation example in its loss: samples of z in the -ELBO, draws of
        the k samples in IWAE's -L_k (more: less noisy stopping)
    ema : float in (0, 1) or None; if given, keep an exponential moving average of the parameters
        (Polyak averaging), avg ← d avg + (1 - d) params after every step with
        d = min(ema, (1 + t) / (10 + t)) at step t, so that early averages forget the initialisation;
        the average is what is validated and what the model holds at the end. None trains without it
    backend : "numpy", "numba" or None; the backend of the whole fit (model and optimizer), unless
        they name their own; None keeps the current one (see :mod:`minivae.backend`)
    verbose : bool, print one line per epoch
    callback : callable(epoch, history) -> bool or None, called after every epoch (1-based);
        returning True stops

    Returns
    -------
    History. On Ctrl-C (KeyboardInterrupt) the fit stops where it is, the model gets the best
    parameters so far (the last average, the initial parameters if nothing finished), and the history
    says ``interrupted`` and where; it is returned, not raised.

    Raises
    ------
    TrainingError
        when a minibatch loss or gradient is NaN or infinite; the model then holds the best
        parameters found before (the initial ones if no epoch finished)
    """
    x_train = model.check_x(x_train, "x_train")
    if x_val is not None:
        x_val = model.check_x(x_val, "x_val")
    if objective is None:
        objective = model.objective()
    for method in ("draw_noise", "loss_and_grads"):
        if not callable(getattr(objective, method, None)):
            raise TypeError(f"objective must have a method {method}(); got {type(objective).__name__}")
    epochs = positive_int(epochs, "epochs")
    warmup = getattr(objective, "warmup", None)
    if warmup is not None and warmup > epochs:
        raise ValueError(f"the objective's warm-up takes {warmup} epochs, longer than the run (epochs={epochs}): "
                         f"the KL would never reach its full weight")
    batch_size = positive_int(batch_size, "batch_size")
    val_samples = positive_int(val_samples, "val_samples")
    if patience is not None:
        patience = positive_int(patience, "patience")
    if optimizer is None:
        optimizer = make_optimizer(REFERENCE.optimizer, REFERENCE.lr)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a minivae.optim.Optimizer; got {type(optimizer).__name__}")
    if ema is not None and (isinstance(ema, bool) or not np.isscalar(ema) or not 0 < ema < 1):
        raise ValueError(f"ema must be a decay in (0, 1) or None; got {ema!r}")
    if rng is None:
        rng = np.random.default_rng(model.config.get("seed", 0))
    check_rng(rng)

    with backends.use_backend(backend) if backend is not None else contextlib.nullcontext():
        trainer = _Trainer(model, objective, optimizer, ema, verbose)
        return trainer.run(x_train, x_val, epochs, batch_size, patience, rng, val_samples, callback)


class _Trainer:
    """The loop of :func:`fit` and the state it keeps: the best parameters and the weight average."""

    def __init__(self, model, objective, optimizer, ema, verbose):
        self.model, self.objective, self.optimizer, self.ema, self.verbose = model, objective, optimizer, ema, verbose
        self.history = History()
        self.best_params = self.copy_params()
        self.average = self.copy_params() if ema else None
        self.where = None  # (epoch, step), 1-based, of the step running now
        # what the validation measures: the objective's own bound, or the -ELBO if it names none
        validator = objective if callable(getattr(objective, "validation_loss", None)) else ELBO()
        self.validation_loss = validator.validation_loss
        self.history.val_loss_name = getattr(validator, "validation_name", "-ELBO")

    def copy_params(self):
        return {key: value.copy() for key, value in self.model.params.items()}

    def run(self, x_train, x_val, epochs, batch_size, patience, rng, val_samples, callback):
        history, start_time = self.history, time.perf_counter()
        try:
            self.train(x_train, x_val, epochs, batch_size, patience, rng, val_samples, callback)
        except KeyboardInterrupt:
            history.interrupted = True
            history.interrupted_at = dict(zip(("epoch", "step"), self.where or (history.epochs + 1, 0)))
        if x_val is not None:
            self.model.set_params(self.best_params)
        elif self.average is not None:
            self.model.set_params(self.average)
        history.seconds = time.perf_counter() - start_time
        if self.verbose and history.stopped_early:
            print(f"stopped after {history.epochs} epochs: no better validation {history.val_loss_name} for "
                  f"{patience} epochs; "
                  f"kept epoch {history.best_epoch} ({history.best_val_loss:.3f})")
        if history.interrupted and self.verbose:
            kept = ("the initial parameters" if history.best_epoch is None and x_val is not None else
                    f"the parameters of epoch {history.best_epoch}" if x_val is not None else
                    "the last parameters" + (" (their average)" if self.average is not None else ""))
            print(f"interrupted at epoch {history.interrupted_at['epoch']}, step "
                  f"{history.interrupted_at['step']}; kept {kept}", flush=True)
        return history

    def train(self, x_train, x_val, epochs, batch_size, patience, rng, val_samples, callback):
        model, history = self.model, self.history
        epochs_since_best = 0
        n = x_train.shape[0]
        n_batches = -(-n // batch_size)
        for epoch in range(1, epochs + 1):
            epoch_start = time.perf_counter()
            if callable(getattr(self.objective, "start_epoch", None)):
                self.objective.start_epoch(epoch)  # schedules, such as the KL warm-up
            order = rng.permutation(n)
            totals = {}
            for step in range(n_batches):
                self.where = (epoch, step + 1)
                batch = x_train[order[step * batch_size:(step + 1) * batch_size]]
                noise = self.objective.draw_noise(model, batch.shape[0], rng)
                with np.errstate(over="ignore", invalid="ignore"):
                    loss, grads, stats = self.objective.loss_and_grads(model, batch, noise)
                self.check_finite(loss, grads, epoch, step, n_batches)
                self.optimizer.step(model.params, grads)
                if self.average is not None:
                    t = history.steps + step
                    self.update_average(min(self.ema, (1 + t) / (10 + t)))
                for name, value in (("loss", loss), *stats.items()):
                    totals[name] = totals.get(name, 0.0) + value * batch.shape[0]
            self.where = None
            history.train_loss.append(totals["loss"] / n)
            for name, total in totals.items():
                if name == "rate":
                    history.train_rate.append(total / n)
                elif name == "distortion":
                    history.train_distortion.append(total / n)
                elif name != "loss":
                    history.train_stats.setdefault(name, []).append(total / n)
            history.steps += n_batches
            history.epochs = epoch

            improved = False
            if x_val is not None:
                current = None
                if self.average is not None:
                    current = self.copy_params()
                    model.set_params(self.average)
                with np.errstate(over="ignore", invalid="ignore"):  # a diverging model: the check below says so
                    val_loss = float(self.validation_loss(model, x_val, val_samples, rng))
                history.val_loss.append(val_loss)
                if x_val.shape[0] >= 2:
                    history.active_units.append(model.active_units(x_val))
                improved = history.best_val_loss is None or val_loss < history.best_val_loss
                if improved:
                    history.best_epoch, history.best_val_loss = epoch, val_loss
                    self.best_params = self.copy_params()
                    epochs_since_best = 0
                else:
                    epochs_since_best += 1
                if current is not None:
                    model.set_params(current)
            else:
                history.best_epoch = epoch

            if self.verbose:
                line = f"epoch {epoch:4d}  train loss {history.train_loss[-1]:9.3f}"
                if x_val is not None:
                    line += (f"  val {history.val_loss_name} {history.val_loss[-1]:9.3f}{' *' if improved else '  '}"
                             f"  best {history.best_val_loss:9.3f} (epoch {history.best_epoch})")
                print(line + f"  {time.perf_counter() - epoch_start:6.2f} s", flush=True)

            if patience is not None and x_val is not None and epochs_since_best >= patience:
                history.stopped_early = True
                break
            if callback is not None and callback(epoch, history):
                break

    def check_finite(self, loss, grads, epoch, step, n_batches):
        """TrainingError, with the best parameters restored, unless the loss and every gradient are finite."""
        # the numba backend counts NaNs and infinities of every gradient in one compiled pass; otherwise
        # one sum per gradient: a NaN or an infinity anywhere makes its sum non-finite
        all_finite = getattr(backends.leaf_ops(self.model.backend), "all_finite", None)
        if all_finite is not None:
            finite = all_finite(grads.values())
        else:
            finite = np.isfinite(sum(float(np.sum(g)) for g in grads.values()))
        if np.isfinite(loss) and finite:
            return
        self.model.set_params(self.best_params)
        where = ("the initial parameters were restored" if self.history.best_epoch is None else
                 f"the parameters of the best epoch ({self.history.best_epoch}) were restored")
        raise TrainingError(
            f"the loss or its gradient became non-finite (loss={loss}) at epoch {epoch}, "
            f"step {step + 1} of {n_batches}; {where}. Try a smaller learning rate.")

    def update_average(self, decay):
        """average ← decay · average + (1 - decay) · params, for every parameter, in place."""
        ops = backends.leaf_ops(self.model.backend)
        for key, value in self.model.params.items():
            ops.ema_update(self.average[key], value, decay)
