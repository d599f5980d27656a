"""Training: minibatch stochastic optimisation of the negative ELBO, with early stopping.

:func:`fit` shuffles the training set every epoch, takes one optimizer step per minibatch with the
gradients of :meth:`minivae.VAE.loss_and_grads`, measures the validation -ELBO after each epoch, and
stops when it has not improved for ``patience`` epochs, restoring the parameters of the best epoch.
"""

import contextlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import backend as backends
from .checks import check_rng, positive_int
from .optim import Adamax, Optimizer


class TrainingError(RuntimeError):
    """Training produced a non-finite loss. The model holds the best parameters found before it."""


@dataclass
class History:
    """What happened during :func:`fit`.

    Attributes
    ----------
    train_loss : list of float, the mean training -ELBO of each epoch (over its minibatches), nats
    val_loss : list of float, the validation -ELBO after each epoch (empty without validation data)
    best_epoch : int or None, the 0-based epoch whose parameters the model holds at the end
    best_val_loss : float or None, val_loss[best_epoch]
    epochs : int, the number of epochs run
    steps : int, the number of optimizer steps taken
    seconds : float, wall-clock time of the whole fit
    stopped_early : bool, whether patience ran out before ``epochs``
    """

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    best_epoch: int = None
    best_val_loss: float = None
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def to_dict(self):
        """A JSON-serialisable dict of the fields."""
        return asdict(self)


def fit(model, x_train, x_val=None, epochs=1000, batch_size=64, optimizer=None, patience=20, rng=None,
        val_samples=1, ema=None, backend=None, verbose=True, callback=None):
    """Train ``model`` on ``x_train`` by minibatch gradient descent on the negative ELBO.

    Parameters
    ----------
    model : :class:`minivae.VAE` (anything with ``params`` and ``loss_and_grads`` and ``elbo``)
    x_train : (N, input_dim) array
    x_val : (M, input_dim) array or None; with it, the validation -ELBO is measured after every epoch
        and drives early stopping; without it, all ``epochs`` run and the last parameters are kept
    epochs : int, the largest number of passes over x_train
    batch_size : int; the last minibatch of an epoch may be smaller
    optimizer : :class:`minivae.optim.Optimizer` (default ``Adamax(lr=1e-3)``, the reference setting)
    patience : int or None; stop after this many epochs without a better validation -ELBO
        (None: never stop early)
    rng : numpy.random.Generator for shuffling and for the eps of every step (default: a generator
        seeded from the model's seed, so that the same model seed gives identical parameters)
    val_samples : int, samples of z per validation example in its -ELBO (more: less noisy stopping)
    ema : float in (0, 1) or None; if given, validate and keep an exponential moving average of the
        parameters (Polyak averaging), avg ← d avg + (1 - d) params after every step with
        d = min(ema, (1 + t) / (10 + t)) at step t, so that early averages forget the initialisation
    backend : "numpy", "numba" or None; the backend of the whole fit (model and optimizer), unless
        they name their own; None keeps the current one (see :mod:`minivae.backend`)
    verbose : bool, print one line per epoch
    callback : callable(epoch, history) -> bool or None, called after every epoch; returning True stops

    Returns
    -------
    History

    Raises
    ------
    TrainingError
        when a minibatch loss or gradient is NaN or infinite; the model then holds the best
        parameters found before (the initial ones if no epoch finished)
    """
    x_train = model._check_x(x_train, "x_train")
    if x_val is not None:
        x_val = model._check_x(x_val, "x_val")
    epochs = positive_int(epochs, "epochs")
    batch_size = positive_int(batch_size, "batch_size")
    if patience is not None:
        patience = positive_int(patience, "patience")
    if optimizer is None:
        optimizer = Adamax(lr=1e-3)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a minivae.optim.Optimizer; got {type(optimizer).__name__}")
    if ema is not None and not 0 < ema < 1:
        raise ValueError(f"ema must be a decay in (0, 1) or None; got {ema!r}")
    if rng is None:
        rng = np.random.default_rng(model.config.get("seed", 0))
    check_rng(rng)

    with backends.use_backend(backend) if backend is not None else contextlib.nullcontext():
        return _train(model, x_train, x_val, epochs, batch_size, optimizer, patience, rng, val_samples, ema,
                      verbose, callback)


def _train(model, x_train, x_val, epochs, batch_size, optimizer, patience, rng, val_samples, ema, verbose,
           callback):
    """The loop of :func:`fit`, on checked arguments."""
    history = History()
    best_params = {key: value.copy() for key, value in model.params.items()}
    average = {key: value.copy() for key, value in model.params.items()} if ema else None
    epochs_since_best = 0
    n = x_train.shape[0]
    n_batches = -(-n // batch_size)
    start_time = time.perf_counter()

    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        order = rng.permutation(n)
        total = 0.0
        for step in range(n_batches):
            batch = x_train[order[step * batch_size:(step + 1) * batch_size]]
            eps = rng.standard_normal((batch.shape[0], model.latent_dim)).astype(model.dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                loss, grads = model._loss_and_grads(batch, eps)
            # one sum per gradient: a NaN or an infinity anywhere makes its sum non-finite
            if not (np.isfinite(loss) and np.isfinite(sum(float(np.sum(g)) for g in grads.values()))):
                model.set_params(best_params)
                where = ("the initial parameters were restored" if history.best_epoch is None else
                         f"the parameters of the best epoch ({history.best_epoch + 1}) were restored")
                raise TrainingError(
                    f"the loss or its gradient became non-finite (loss={loss}) at epoch {epoch + 1}, "
                    f"step {step + 1} of {n_batches}; {where}. Try a smaller learning rate.")
            optimizer.step(model.params, grads)
            if average is not None:
                decay = min(ema, (1 + history.steps + step) / (10 + history.steps + step))
                _update_average(average, model, decay)
            total += loss * batch.shape[0]
        history.train_loss.append(total / n)
        history.steps += n_batches
        history.epochs = epoch + 1

        improved = False
        if x_val is not None:
            if average is not None:
                current = {key: value.copy() for key, value in model.params.items()}
                model.set_params(average)
            val_loss = -float(np.mean(model.elbo(x_val, n_samples=val_samples, rng=rng)))
            history.val_loss.append(val_loss)
            improved = history.best_val_loss is None or val_loss < history.best_val_loss
            if improved:
                history.best_epoch, history.best_val_loss = epoch, val_loss
                best_params = {key: value.copy() for key, value in model.params.items()}
                epochs_since_best = 0
            else:
                epochs_since_best += 1
            if average is not None:
                model.set_params(current)
        else:
            history.best_epoch = epoch

        if verbose:
            line = f"epoch {epoch + 1:4d}  train -ELBO {history.train_loss[-1]:9.3f}"
            if x_val is not None:
                line += (f"  val -ELBO {history.val_loss[-1]:9.3f}{' *' if improved else '  '}"
                         f"  best {history.best_val_loss:9.3f} (epoch {history.best_epoch + 1})")
            print(line + f"  {time.perf_counter() - epoch_start:6.2f} s", flush=True)

        if patience is not None and x_val is not None and epochs_since_best >= patience:
            history.stopped_early = True
            break
        if callback is not None and callback(epoch, history):
            break

    if x_val is not None:
        model.set_params(best_params)
    history.seconds = time.perf_counter() - start_time
    if verbose and history.stopped_early:
        print(f"stopped after {history.epochs} epochs: no better validation -ELBO for {patience} epochs; "
              f"kept epoch {history.best_epoch + 1} ({history.best_val_loss:.3f})")
    return history


def _update_average(average, model, decay):
    """average ← decay · average + (1 - decay) · params, for every parameter, in place."""
    if backends.resolve(model.backend) == "numba":
        for key, value in model.params.items():
            backends.kernels().ema_update(average[key], value, decay)
        return
    for key, value in model.params.items():
        average[key] *= decay
        average[key] += (1 - decay) * value
