"""The reference setting, stated once.

The setting every number in minivae's README is measured in: the 8x8 digits (pixel values 0..16)
with a categorical decoder of 17 values per pixel, latent 16, hidden layers 256-256 with LeakyReLU
(slope 0.01), Adamax with learning rate 1e-3, minibatches of 64, early stopping on the validation
-ELBO with patience 20, Polyak averaging of the weights, and the importance-weighted test NLL with
K = 512 samples.

:func:`minivae.fit`'s defaults, ``minivae train``, ``minivae compare``, ``minivae bench`` and the
tutorials all read it from here, so that changing a number here changes it everywhere.

    >>> from minivae.reference import REFERENCE
    >>> REFERENCE.latent_dim, REFERENCE.hidden, REFERENCE.lr
    (16, (256, 256), 0.001)
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ReferenceSetting:
    """The settings of the reference model and its training; see the module docstring.

    Attributes
    ----------
    input_dim : 64, the 8x8 digits
    num_values : 17, the pixel values 0..16 (categorical decoder)
    likelihood : "categorical"
    latent_dim : 16
    hidden : (256, 256), the encoder's hidden widths (the decoder mirrors them)
    activation : "leaky_relu", with slope ``leaky_relu_slope`` (PyTorch's default, 0.01)
    optimizer, lr : "adamax", 1e-3
    batch_size : 64
    max_epochs : 1000, an upper bound; early stopping ends training long before
    patience : 20 epochs without a better validation -ELBO
    ema : 0.999, the decay of Polyak averaging of the weights (None turns it off); it lowers the
        test -ELBO by about 0.3 nats at no cost per step
    val_samples : 1 sample of z per validation example in the validation -ELBO that drives early
        stopping (as in the single-sample reference implementations)
    test_samples : 512, K of the importance-weighted log p(x) reported as the test NLL
    elbo_samples : 100 samples of z per test example in a reported -ELBO: the same expectation as
        one sample, with less noise
    seed : 0
    """

    input_dim: int = 64
    num_values: int = 17
    likelihood: str = "categorical"
    latent_dim: int = 16
    hidden: tuple = (256, 256)
    activation: str = "leaky_relu"
    leaky_relu_slope: float = 0.01
    optimizer: str = "adamax"
    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 1000
    patience: int = 20
    ema: float = 0.999
    val_samples: int = 1
    test_samples: int = 512
    elbo_samples: int = 100
    seed: int = 0

    def to_dict(self):
        """The settings as a JSON-serialisable dict."""
        return asdict(self)


REFERENCE = ReferenceSetting()


@dataclass(frozen=True)
class LinearSchedule:
    """How ``minivae compare`` and tutorial 05 train a linear Gaussian VAE to the pPCA maximum.

    Adam on minibatches of ``batch_size`` with a constant learning rate ``lr`` for the first
    ``constant_fraction`` of the ``steps``, then an exponential decay to ``final_lr``; the whole
    schedule is compressed to end within ``seconds`` on a slow machine (see
    :func:`minivae.linear_vae.train_linear_vae`). Measured: 60000 steps take 11 s for q = 2 and
    23-41 s for q = 16 on 2 shared cores.

    Attributes
    ----------
    batch_size : 250
    steps : 60000, 15000 epochs of 4 minibatches of the digits' training set
    seconds : 60.0, the time budget
    lr : 1e-2, Adam's learning rate for the first part
    final_lr : 3e-5, where the decay ends
    constant_fraction : 0.5, the share of training at ``lr``
    trace_points : 100 evaluations of the closed-form training ELBO, geometrically spaced in steps
    """

    batch_size: int = 250
    steps: int = 60000
    seconds: float = 60.0
    lr: float = 1e-2
    final_lr: float = 3e-5
    constant_fraction: float = 0.5
    trace_points: int = 100

    def to_dict(self):
        """The settings as a JSON-serialisable dict."""
        return asdict(self)


LINEAR_SCHEDULE = LinearSchedule()
