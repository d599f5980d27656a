"""minivae: variational autoencoders written by hand in NumPy.

Every gradient is written out beside its forward computation and checked by finite differences; a
closed-form probabilistic PCA gives the exact log-likelihood that an ELBO can be measured against.

    >>> import minivae
    >>> x_train, _ = minivae.datasets.load_digits("train")
    >>> x_val, _ = minivae.datasets.load_digits("val")
    >>> model = minivae.VAE(input_dim=64, latent_dim=16)          # categorical, 17 values per pixel
    >>> history = minivae.fit(model, x_train, x_val)              # Adamax, early stopping
    >>> nll = -model.log_likelihood(x_val, n_samples=512).mean()  # nats per example

Nothing here imports numba or matplotlib: the compiled kernels (the default "numba" backend, see
:mod:`minivae.backend`) load and compile on first use, plots import matplotlib when they draw.
"""

from . import (backend, datasets, evaluate, gradcheck, hierarchical, layers, likelihoods, objectives, ops, optim,
               ppca, priors, reference)
from .backend import get_backend, set_backend, use_backend
from .gradcheck import check_model_gradients, numerical_gradient, rel_error
from .hierarchical import TwoLevelVAE
from .objectives import ELBO, IWAE
from .optim import SGD, Adam, Adamax
from .ppca import PPCA
from .priors import MixtureOfGaussians, StandardNormal, VampPrior
from .reference import REFERENCE
from .training import History, TrainingError, fit
from .vae import VAE

__version__ = "0.1.0"

__all__ = ["VAE", "TwoLevelVAE", "PPCA", "ELBO", "IWAE", "StandardNormal", "MixtureOfGaussians", "VampPrior", "REFERENCE", "fit", "History", "TrainingError", "SGD", "Adam",
           "Adamax", "rel_error", "numerical_gradient", "check_model_gradients", "get_backend", "set_backend",
           "use_backend", "backend", "datasets", "evaluate", "gradcheck", "layers", "likelihoods", "objectives",
           "ops", "optim", "ppca", "priors", "reference", "hierarchical"]
