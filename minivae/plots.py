"""Figures for minivae: image grids, training curves, latent spaces, comparisons.

Every function here takes plain arrays (or a small object with a few attributes), never a model,
so it can be used on numbers that came from anywhere. Each one builds its own
``matplotlib.figure.Figure`` with an Agg canvas attached: nothing touches ``matplotlib.pyplot``,
no backend is chosen globally, and the figures work on a machine without a display. matplotlib
is imported inside the functions, so ``import minivae.plots`` stays cheap.

Every function that makes a figure returns it and, when ``path`` is given, also writes it there
with :func:`save_figure` (PNG at 120 dpi unless the suffix asks for another format). In a Jupyter
notebook the returned Figure displays itself when it is the last expression of a cell.

Images are rows of a 2-D array, ``images: (n, height * width)``, each row an image flattened in
row-major order (the layout of ``digits.csv.gz``), with ``image_shape = (height, width)``.
"""

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "fontscale",
    "image_grid",
    "plot_bars",
    "plot_gaps",
    "plot_history",
    "plot_interpolation",
    "plot_latent",
    "plot_lines",
    "plot_reconstructions",
    "plot_samples",
    "save_figure",
    "set_fontscale",
]

# Resolution of saved raster figures: sharp on screen, small files.
SAVE_DPI = 120

# Width of the gap between images in a mosaic, in image pixels. The gaps (and unused cells of the
# last row) are masked and drawn in GAP_COLOR, a light grey that shows against both white and
# black backgrounds.
GAP_PIXELS = 1
GAP_COLOR = "0.85"

# Side of one image in a grid figure, in inches (about 72 screen pixels at SAVE_DPI), and the
# widest a grid figure may get before the cells are shrunk to fit.
CELL_INCHES = 0.6
MAX_GRID_WIDTH_INCHES = 12.0

# Size of the line, bar and scatter figures, in inches.
CURVE_FIGSIZE = (6.4, 4.0)

# Rule that zooms the y axis of a training history (see plot_history): skip the first
# max(ZOOM_MIN_SKIP, ceil(ZOOM_SKIP_FRACTION * n_epochs)) epochs, take the largest remaining value
# as the top, and zoom only when the full range of the values is more than ZOOM_RATIO times the
# range that would be shown. Histories shorter than ZOOM_MIN_EPOCHS are never zoomed. (The largest
# value rather than a percentile, so that no epoch after the skipped ones is ever cut off: a
# percentile also cuts the epochs just after the skipped ones, where the curves still fall.)
ZOOM_MIN_EPOCHS = 6
ZOOM_MIN_SKIP = 2
ZOOM_SKIP_FRACTION = 0.1
ZOOM_RATIO = 2.0

# Labels for the −ELBO axis; U+2212 is the typographic minus sign.
NEG_ELBO_LABEL = "\u2212ELBO (nats per example)"

# Width of plot_gaps' figure: long row names and a log axis with room for the written differences.
GAPS_WIDTH_INCHES = 8.0

# plot_latent: the longer side of the plot area, the most elongated it may get, the room for tick
# labels and axis labels (width, height), and for the legend, in inches.
LATENT_PLOT_INCHES = 4.6
LATENT_MAX_ASPECT = 2.0
LATENT_MARGIN_INCHES = (0.9, 0.7)
LATENT_LEGEND_INCHES = 0.8

# With more classes than this, plot_latent colours by a continuous colormap with a colorbar
# instead of a legend (tab20 is the largest qualitative palette matplotlib ships).
MAX_LEGEND_CLASSES = 20


# matplotlib's default font size in points; set_fontscale multiplies it. Every other font size of a
# figure ("small", "large", ...) is relative to it, so one number scales them all.
BASE_FONT_SIZE = 10.0


# ---------------------------------------------------------------------------------------------
# Fonts for slides
# ---------------------------------------------------------------------------------------------

def _check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"scale must be a number such as 1.5; got {type(scale).__name__}")
    if not 0 < scale <= 10:
        raise ValueError(f"scale must be in (0, 10]; got {scale}")
    return float(scale)


def set_fontscale(scale):
    """Make the fonts of every figure made from now on ``scale`` times matplotlib's default size.

    For slides, ``set_fontscale(1.5)``; ``set_fontscale(1)`` goes back. The figures keep their size
    in inches, so larger fonts take room from the plot. (Sets ``matplotlib.rcParams["font.size"]``;
    the tutorials call it when ``MINIVAE_FONTSCALE`` is set.)

    Parameters
    ----------
    scale : float in (0, 10]
    """
    import matplotlib

    matplotlib.rcParams["font.size"] = BASE_FONT_SIZE * _check_scale(scale)


def fontscale(scale):
    """A context manager: the figures made inside it have fonts ``scale`` times the default size.

        with plots.fontscale(1.6):
            fig = plots.plot_history(history)
        plots.save_figure(fig, "curves.pdf")
    """
    import matplotlib

    return matplotlib.rc_context({"font.size": BASE_FONT_SIZE * _check_scale(scale)})


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _new_figure(figsize):
    """A Figure with an Agg canvas and constrained layout, not registered with pyplot.

    Parameters
    ----------
    figsize : (float, float)
        Width and height in inches.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    """Write a figure to ``path``, creating missing parent folders.

    The format follows the suffix of ``path`` (``.png``, ``.pdf``, ``.svg``, ...; PNG when there is
    none), raster formats at ``SAVE_DPI`` = 120 dots per inch, cropped to the drawn content so
    that legends placed outside the axes are kept. The file is written under a temporary name and
    renamed into place (:func:`minivae.files.atomic_path`).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to write.
    path : str or os.PathLike
        Where to write it.

    Returns
    -------
    path : pathlib.Path
        The path written.
    """
    if not hasattr(fig, "savefig"):
        raise TypeError(f"fig must be a matplotlib Figure; got {type(fig).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    from .files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure_format = path.suffix[1:].lower() if path.suffix else "png"
    with atomic_path(path) as temporary:  # a figure interrupted half-way never replaces a whole one
        fig.savefig(temporary, dpi=SAVE_DPI, bbox_inches="tight", pad_inches=0.05, format=figure_format)
    return path


def _check_image_shape(image_shape):
    """Return ``image_shape`` as a tuple ``(height, width)`` of positive ints, or raise."""
    try:
        shape = tuple(image_shape)
    except TypeError:
        raise TypeError(
            f"image_shape must be a pair (height, width); got {image_shape!r}") from None
    if len(shape) != 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
            for s in shape):
        raise ValueError(
            f"image_shape must be two positive integers (height, width); got {image_shape!r}")
    return int(shape[0]), int(shape[1])


def _check_images(images, image_shape, name="images"):
    """Return ``images`` as a float array ``(n, height * width)``, or raise naming ``name``."""
    height, width = _check_image_shape(image_shape)
    images = np.asarray(images, dtype=float)
    if images.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_images, {height * width}), one flattened image per "
            f"row; got an array of shape {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {images.shape})")
    if images.shape[1] != height * width:
        raise ValueError(
            f"{name} have {images.shape[1]} values per row; image_shape "
            f"{(height, width)} needs {height * width}")
    return images


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _color_limits(arrays, vmin, vmax):
    """Shared colour limits for several image arrays.

    Defaults: ``vmin = min(0, smallest finite value)`` so that a blank pixel keeps the colour of 0
    (white with ``gray_r``), and ``vmax`` = the largest finite value. Explicit values win.

    Parameters
    ----------
    arrays : list of numpy.ndarray
    vmin, vmax : float or None

    Returns
    -------
    vmin, vmax : float
        With ``vmax > vmin``.
    """
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if vmin is None:
        vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    if vmax is None:
        vmax = float(finite.max()) if finite.size else 1.0
        if vmax <= vmin:
            vmax = vmin + 1.0
    if not vmax > vmin:
        raise ValueError(f"vmax must be greater than vmin; got vmin={vmin}, vmax={vmax}")
    return float(vmin), float(vmax)


def _mosaic(images, image_shape, ncols):
    """Tile flattened images into one 2-D array with masked gaps between them.

    Parameters
    ----------
    images : numpy.ndarray, (n, height * width)
    image_shape : (int, int)
    ncols : int

    Returns
    -------
    mosaic : numpy.ma.MaskedArray, (nrows * (height + GAP_PIXELS) - GAP_PIXELS,
                                    ncols * (width + GAP_PIXELS) - GAP_PIXELS)
        Image ``i`` sits in row ``i // ncols``, column ``i % ncols``; gaps, unused cells and
        non-finite pixels are masked.
    """
    height, width = image_shape
    n = images.shape[0]
    nrows = math.ceil(n / ncols)
    step_y, step_x = height + GAP_PIXELS, width + GAP_PIXELS
    mosaic = np.full((nrows * step_y - GAP_PIXELS, ncols * step_x - GAP_PIXELS), np.nan)
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        mosaic[row * step_y:row * step_y + height,
               col * step_x:col * step_x + width] = image.reshape(height, width)
    return np.ma.masked_invalid(mosaic)


def _bare_axes(ax):
    """Hide ticks and frame of an image axes (axis labels stay usable)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _grid_figsize(nrows, ncols, extra_height=0.0):
    """Figure size (inches) for an nrows x ncols image grid, at most MAX_GRID_WIDTH_INCHES wide."""
    cell = min(CELL_INCHES, MAX_GRID_WIDTH_INCHES / ncols)
    return (ncols * cell + 0.2, nrows * cell + 0.2 + extra_height)


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def image_grid(images, image_shape=(8, 8), ncols=None, ax=None, vmin=None, vmax=None,
               cmap="gray_r"):
    """Draw images as one mosaic, in reading order, separated by thin grey gaps.

    Parameters
    ----------
    images : array_like, (n, height * width)
        One flattened (row-major) image per row.
    image_shape : (int, int)
        ``(height, width)`` of one image.
    ncols : int, optional
        Images per row of the grid; default ``ceil(sqrt(n))``, a near-square grid. Capped at
        ``n``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; by default a new Figure is made (reach it as ``image.axes.figure``).
    vmin, vmax : float, optional
        Values mapped to the two ends of the colormap. Default ``vmin = min(0, smallest
        value)``, ``vmax`` = largest value. Pass the same limits to compare several grids.
    cmap : str or matplotlib.colors.Colormap
        Colormap; the default ``gray_r`` draws 0 white and large values black, like ink.

    Returns
    -------
    image : matplotlib.image.AxesImage
        The mosaic; ``image.get_array()`` is a masked array of shape
        ``(nrows * (height + 1) - 1, ncols * (width + 1) - 1)`` whose gaps are masked (drawn
        light grey); unused cells at the end of the last row are masked and transparent.
    """
    import matplotlib

    image_shape = _check_image_shape(image_shape)
    images = _check_images(images, image_shape)
    n = images.shape[0]
    ncols = math.ceil(math.sqrt(n)) if ncols is None else _check_positive_int(ncols, "ncols")
    ncols = min(ncols, n)
    vmin, vmax = _color_limits([images], vmin, vmax)
    colormap = matplotlib.colormaps.get_cmap(cmap).with_extremes(bad=GAP_COLOR)

    if ax is None:
        fig = _new_figure(_grid_figsize(math.ceil(n / ncols), ncols))
        ax = fig.add_subplot()
    mosaic = _mosaic(images, image_shape, ncols)
    # The unused cells at the end of the last row are left transparent rather than grey.
    alpha = np.ones(mosaic.shape)
    n_last = n - (math.ceil(n / ncols) - 1) * ncols
    if n_last < ncols:
        alpha[-image_shape[0]:, n_last * (image_shape[1] + GAP_PIXELS):] = 0.0
    image = ax.imshow(mosaic, cmap=colormap, vmin=vmin, vmax=vmax, alpha=alpha,
                      interpolation="nearest")
    _bare_axes(ax)
    return image


def plot_reconstructions(x, x_reconstructed, image_shape=(8, 8), path=None, n=10, vmax=None,
                         title="Data and their reconstructions"):
    """Data on the top row, their reconstructions below, on a shared colour scale.

    Parameters
    ----------
    x : array_like, (batch, height * width)
        Data images.
    x_reconstructed : array_like, (batch, height * width)
        Reconstruction of each row of ``x`` (for instance the mean of p(x | z) at z = mu(x)),
        on the same scale as ``x``.
    image_shape : (int, int)
        ``(height, width)`` of one image.
    path : str or os.PathLike, optional
        Where to save the figure.
    n : int
        How many pairs to show (the first ``n`` rows; fewer if ``batch < n``).
    vmax : float, optional
        Value drawn black; default the largest value of both rows.
    title : str or None
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes holding a 2-row mosaic, rows labelled "data" and "reconstruction".
    """
    image_shape = _check_image_shape(image_shape)
    x = _check_images(x, image_shape, name="x")
    x_reconstructed = _check_images(x_reconstructed, image_shape, name="x_reconstructed")
    if x.shape != x_reconstructed.shape:
        raise ValueError(
            f"x and x_reconstructed must have the same shape; got {x.shape} and "
            f"{x_reconstructed.shape}")
    n = min(_check_positive_int(n, "n"), x.shape[0])
    x, x_reconstructed = x[:n], x_reconstructed[:n]
    vmin, vmax = _color_limits([x, x_reconstructed], None, vmax)

    fig = _new_figure(_grid_figsize(2, n, extra_height=0.4 if title else 0.1))
    fig.set_figwidth(fig.get_figwidth() + 1.1)  # room for the row labels
    ax = fig.add_subplot()
    image_grid(np.concatenate([x, x_reconstructed]), image_shape, ncols=n, ax=ax,
               vmin=vmin, vmax=vmax)
    height = image_shape[0]
    ax.set_yticks([(height - 1) / 2, height + GAP_PIXELS + (height - 1) / 2],
                  ["data", "reconstruction"])
    ax.tick_params(axis="y", length=0)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_samples(samples, image_shape=(8, 8), path=None, ncols=10,
                 title="Samples from the prior", vmax=None):
    """A grid of generated images.

    Parameters
    ----------
    samples : array_like, (n, height * width)
        One flattened image per row, e.g. the means of p(x | z) for z drawn from the prior.
    image_shape : (int, int)
        ``(height, width)`` of one image.
    path : str or os.PathLike, optional
        Where to save the figure.
    ncols : int
        Images per row (capped at ``n``).
    title : str or None
        Figure title.
    vmax : float, optional
        Value drawn black; default the largest value.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    image_shape = _check_image_shape(image_shape)
    samples = _check_images(samples, image_shape, name="samples")
    ncols = min(_check_positive_int(ncols, "ncols"), samples.shape[0])
    nrows = math.ceil(samples.shape[0] / ncols)
    fig = _new_figure(_grid_figsize(nrows, ncols, extra_height=0.3 if title else 0.0))
    ax = fig.add_subplot()
    image_grid(samples, image_shape, ncols=ncols, ax=ax, vmax=vmax)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_interpolation(images, image_shape=(8, 8), path=None,
                       title="Interpolation between the end images", vmax=None):
    """One row of images, read left to right (e.g. decodings along a path between two digits).

    Parameters
    ----------
    images : array_like, (n_steps, height * width)
        The images in path order; the first and last are the end points.
    image_shape : (int, int)
        ``(height, width)`` of one image.
    path : str or os.PathLike, optional
        Where to save the figure.
    title : str or None
        Figure title.
    vmax : float, optional
        Value drawn black; default the largest value.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    images = _check_images(images, _check_image_shape(image_shape))
    return plot_samples(images, image_shape, path, ncols=images.shape[0], title=title, vmax=vmax)


# ---------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------

_REQUIRED = object()


def _history_field(history, name, default=_REQUIRED):
    """history[name] or history.name; ``default`` where it has none, if given, else a TypeError."""
    if isinstance(history, Mapping):
        if name not in history:
            if default is not _REQUIRED:
                return default
            raise TypeError(f"history has no key {name!r}")
        return history[name]
    if not hasattr(history, name):
        if default is not _REQUIRED:
            return default
        raise TypeError(
            f"history must have attributes train_loss, val_loss and best_epoch; "
            f"{type(history).__name__} has no {name!r}")
    return getattr(history, name)


def _zoomed_ylim(values, n_epochs):
    """The y range that plot_history zooms to, or None when the full range is fine.

    Parameters
    ----------
    values : list of numpy.ndarray
        Each of length ``n_epochs``, the curves drawn.
    n_epochs : int

    Returns
    -------
    (bottom, top) : (float, float) or None
    """
    if n_epochs < ZOOM_MIN_EPOCHS:
        return None
    skip = max(ZOOM_MIN_SKIP, math.ceil(ZOOM_SKIP_FRACTION * n_epochs))
    everything = np.concatenate(values)
    everything = everything[np.isfinite(everything)]
    tail = np.concatenate([v[skip:] for v in values])
    tail = tail[np.isfinite(tail)]
    if tail.size == 0:
        return None
    low = float(everything.min())
    top = float(tail.max())
    span = top - low
    if span <= 0 or float(everything.max()) - low <= ZOOM_RATIO * span:
        return None
    return low - 0.05 * span, top + 0.1 * span


def plot_history(history, path=None, title=None):
    """Training and validation −ELBO per epoch, with the best validation epoch marked.

    The y axis is zoomed when the first epochs would squash the rest of the curves: skip the
    first ``max(2, ceil(n_epochs / 10))`` epochs, let ``top`` be the largest of the remaining
    values (both curves) and ``low`` the smallest value overall; if the largest value overall is
    more than ``2 * (top - low)`` above ``low``, the y axis shows only ``low - 5%`` to
    ``top + 10%`` of that span, so the early epochs run off the top, and a note in the lower left
    corner gives the largest value left off. Histories of fewer than 6 epochs are never zoomed.

    Parameters
    ----------
    history : object or Mapping
        With attributes (or keys) ``train_loss``: list of float, mean training −ELBO per epoch;
        ``val_loss``: list of float, empty or one value per epoch; ``best_epoch``: int or None,
        the best validation epoch, counted from 1 as :class:`minivae.History` counts it.
    path : str or os.PathLike, optional
        Where to save the figure.
    title : str, optional
        Axes title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes; ``ax.lines`` holds exactly the curves (training, then validation if any). The
        best epoch is a scatter dot and a dotted vertical line (a LineCollection).
    """
    from matplotlib.ticker import MaxNLocator

    train_loss = np.asarray(_history_field(history, "train_loss"), dtype=float)
    val_loss = np.asarray(_history_field(history, "val_loss"), dtype=float)
    best_epoch = _history_field(history, "best_epoch")
    if train_loss.ndim != 1 or train_loss.size == 0:
        raise ValueError(
            f"history.train_loss must be a non-empty list of numbers; got shape "
            f"{train_loss.shape}")
    if val_loss.ndim != 1 or val_loss.size not in (0, train_loss.size):
        raise ValueError(
            f"history.val_loss must be empty or hold one value per epoch "
            f"({train_loss.size}); got shape {val_loss.shape}")
    if best_epoch is not None:
        if (isinstance(best_epoch, bool) or not isinstance(best_epoch, (int, np.integer))
                or not 1 <= best_epoch <= val_loss.size):
            raise ValueError(
                f"history.best_epoch must be None or an epoch counted from 1 "
                f"(1..{val_loss.size}); got {best_epoch!r} with {val_loss.size} "
                f"validation values")
        best_epoch = int(best_epoch)

    n_epochs = train_loss.size
    epochs = np.arange(1, n_epochs + 1)
    marker = "o" if n_epochs <= 30 else None
    fig = _new_figure(CURVE_FIGSIZE)
    ax = fig.add_subplot()
    ax.plot(epochs, train_loss, color="C0", marker=marker, markersize=3, label="training")
    curves = [train_loss]
    if val_loss.size:
        ax.plot(epochs, val_loss, color="C1", marker=marker, markersize=3, label="validation")
        curves.append(val_loss)
    if best_epoch is not None:
        x_best, y_best = best_epoch, val_loss[best_epoch - 1]
        ax.vlines(x_best, 0, 1, transform=ax.get_xaxis_transform(), colors="0.4",
                  linestyles=":", linewidth=1.2, zorder=1)
        ax.scatter([x_best], [y_best], s=45, color="C1", edgecolors="black", linewidths=0.8,
                   zorder=3, label=f"best validation: epoch {x_best}, {y_best:.2f}")

    ylim = _zoomed_ylim(curves, n_epochs)
    if ylim is not None:
        ax.set_ylim(*ylim)
        highest = max(float(np.nanmax(np.where(np.isfinite(c), c, np.nan))) for c in curves)
        ax.text(0.01, 0.01, f"y axis zoomed: early epochs reach {highest:.4g}",
                transform=ax.transAxes, ha="left", va="bottom", fontsize="small", color="0.35")
    ax.set_xlim(0.5, n_epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    name = _history_field(history, "val_loss_name", default=None)
    if name in (None, "-ELBO"):
        ax.set_ylabel(NEG_ELBO_LABEL)
    else:  # an IWAE run: the training loss and the validation loss are -L_k
        ax.set_ylabel(f"{name.replace('-', chr(0x2212))} (nats per example)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_lines(curves, path=None, xlabel="epoch", ylabel="nats per example", hlines=None,
               title=None, logx=False):
    """Several named curves on one axes, with optional labelled horizontal reference lines.

    Parameters
    ----------
    curves : dict of str -> (x, y)
        Each value a pair of 1-D array_like of equal length.
    path : str or os.PathLike, optional
        Where to save the figure.
    xlabel, ylabel : str
        Axis labels.
    hlines : dict of str -> float, optional
        Reference values drawn as dashed horizontal lines across the axes, named in the legend
        (e.g. ``{"pPCA maximum log-likelihood": -23.4}``).
    title : str, optional
        Axes title.
    logx : bool
        Logarithmic x axis (all x must then be positive).

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes; ``ax.lines`` holds the curves in order, then the reference lines.
    """
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError(f"curves must be a non-empty dict name -> (x, y); got {curves!r}")
    hlines = {} if hlines is None else hlines
    if not isinstance(hlines, Mapping):
        raise ValueError(f"hlines must be a dict name -> y value; got {type(hlines).__name__}")
    checked = []
    for name, pair in curves.items():
        try:
            x, y = pair
        except (TypeError, ValueError):
            raise ValueError(
                f"curves[{name!r}] must be a pair (x, y); got {type(pair).__name__}") from None
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if x.ndim != 1 or y.ndim != 1 or x.size != y.size or x.size == 0:
            raise ValueError(
                f"curves[{name!r}] must be two non-empty 1-D arrays of the same length; got "
                f"x of shape {x.shape} and y of shape {y.shape}")
        if logx and not np.all(x > 0):
            raise ValueError(
                f"logx=True needs positive x values; curves[{name!r}] has x down to {x.min()}")
        checked.append((str(name), x, y))
    references = []
    for name, value in hlines.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"hlines[{name!r}] must be a number; got {type(value).__name__}") from None
        references.append((str(name), value))

    fig = _new_figure(CURVE_FIGSIZE)
    ax = fig.add_subplot()
    for name, x, y in checked:
        ax.plot(x, y, label=name, marker="o" if x.size <= 30 else None, markersize=3)
    for i, (name, value) in enumerate(references):
        ax.axhline(value, color=f"C{len(checked) + i}", linestyle="--", linewidth=1.3,
                   label=f"{name} ({value:.2f})")
    if logx:
        from matplotlib.ticker import StrMethodFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))  # "10", "100", not 10^1, 10^2
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    return _finish(fig, path)


# ---------------------------------------------------------------------------------------------
# Latent space and comparisons
# ---------------------------------------------------------------------------------------------

def _project_2d(z):
    """Points to draw and axis labels for a latent array of any width.

    Parameters
    ----------
    z : numpy.ndarray, (n, latent_dim)

    Returns
    -------
    points : numpy.ndarray, (n, 2)
        ``z`` itself when latent_dim == 2; its first two principal-component scores when
        latent_dim > 2 (SVD of the centred data); ``(z[:, 0], row index)`` when latent_dim == 1.
    xlabel, ylabel : str
    """
    n, latent_dim = z.shape
    if latent_dim == 1:
        return np.column_stack([z[:, 0], np.arange(n)]), "$z_1$", "example index"
    if latent_dim == 2:
        return z, "$z_1$", "$z_2$"
    centred = z - z.mean(axis=0)
    _, singular_values, v_transposed = np.linalg.svd(centred, full_matrices=False)
    points = centred @ v_transposed[:2].T
    total = float(np.sum(singular_values ** 2))
    share = singular_values[:2] ** 2 / total if total > 0 else np.zeros(2)
    return (points,
            f"PC 1 of z ({100 * share[0]:.0f}% of variance)",
            f"PC 2 of z ({100 * share[1]:.0f}% of variance)")


def plot_latent(z, labels=None, path=None, title=None):
    """Scatter of latent codes, coloured by class.

    Parameters
    ----------
    z : array_like, (n, latent_dim)
        Latent codes, e.g. posterior means mu(x). With latent_dim > 2 the points are projected
        onto the first two principal components of z (SVD of the centred codes; the axis labels
        say "PC 1"/"PC 2" and the share of variance each carries). With latent_dim == 1, z is
        plotted against the row index.
    labels : array_like, (n,), optional
        Class of each point (e.g. the digit). Each distinct value gets one colour of tab10
        (tab20 beyond 10 classes) and a legend entry; beyond 20 classes a continuous colormap
        and a colorbar are used instead.
    path : str or os.PathLike, optional
        Where to save the figure.
    title : str, optional
        Axes title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes holding one scatter collection with ``n`` points, in row order.
    """
    import matplotlib
    from matplotlib.lines import Line2D

    z = np.asarray(z, dtype=float)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(
            f"z must be a 2-D array (n, latent_dim) with at least one row and column; got "
            f"shape {z.shape}")
    n = z.shape[0]
    points, xlabel, ylabel = _project_2d(z)

    # With equal scales on both axes (latent_dim >= 2), a fixed figure shape leaves empty bands on
    # the sides; the plot area gets the shape of the points instead (its aspect clipped to
    # 1/LATENT_MAX_ASPECT..LATENT_MAX_ASPECT), plus room for the labels and the legend.
    legend_room = 0.0 if labels is None else LATENT_LEGEND_INCHES
    aspect = 1.0
    if z.shape[1] >= 2:
        spans = np.ptp(points, axis=0)
        if spans[1] > 0 and spans[0] > 0:
            aspect = float(np.clip(spans[0] / spans[1], 1 / LATENT_MAX_ASPECT, LATENT_MAX_ASPECT))
        plot_height = LATENT_PLOT_INCHES / max(1.0, aspect)
        plot_width = plot_height * aspect
    else:
        plot_width, plot_height = CURVE_FIGSIZE[0] - 1.0, CURVE_FIGSIZE[1] - 0.8
    fig = _new_figure((plot_width + LATENT_MARGIN_INCHES[0] + legend_room,
                       plot_height + LATENT_MARGIN_INCHES[1] + (0.3 if title else 0.0)))
    ax = fig.add_subplot()
    size = float(np.clip(2000.0 / n, 6.0, 30.0))  # fewer points, bigger dots
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, color="C0", alpha=0.8, linewidths=0)
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(
                f"labels must have one entry per row of z, shape ({n},); got shape "
                f"{labels.shape}")
        classes, class_index = np.unique(labels, return_inverse=True)
        n_classes = classes.size
        if n_classes <= MAX_LEGEND_CLASSES:
            palette = matplotlib.colormaps["tab10" if n_classes <= 10 else "tab20"].colors
            colors = np.asarray(palette)[class_index]
            ax.scatter(points[:, 0], points[:, 1], s=size, c=colors, alpha=0.8, linewidths=0)
            handles = [Line2D([], [], linestyle="", marker="o", markersize=6,
                              color=palette[k], label=str(c)) for k, c in enumerate(classes)]
            ax.legend(handles=handles, title="label", loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0.0)
        else:
            scatter = ax.scatter(points[:, 0], points[:, 1], s=size, c=class_index,
                                 cmap="viridis", alpha=0.8, linewidths=0)
            colorbar = fig.colorbar(scatter, ax=ax, label="label")
            ticks = np.unique(np.linspace(0, n_classes - 1, min(n_classes, 10)).round())
            colorbar.set_ticks(ticks, labels=[str(classes[int(t)]) for t in ticks])
    if z.shape[1] >= 2:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def _named_values(names, values):
    """names as strings and values as a 1-D float array, checked to be non-empty and of equal length."""
    names = [str(name) for name in names]
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size != len(names) or values.size == 0:
        raise ValueError(
            f"names and values must be non-empty and of equal length; got {len(names)} names "
            f"and values of shape {values.shape}")
    return names, values


def plot_bars(names, values, path=None, ylabel="nats per example", title=None, annotate=True,
              fmt="{:.2f}"):
    """Horizontal bars, one per name, top to bottom in the order given, each value written on it.

    Horizontal so that long model names stay readable; the bars start at zero.

    Parameters
    ----------
    names : sequence of str, (n,)
        One label per bar (e.g. model names).
    values : array_like, (n,)
        Finite numbers, e.g. test −ELBO per model.
    path : str or os.PathLike, optional
        Where to save the figure.
    ylabel : str
        Label of the value axis (the horizontal axis, since the bars are horizontal).
    title : str, optional
        Axes title.
    annotate : bool
        Write each value at the end of its bar.
    fmt : str
        Format of the written values.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes holding ``n`` bar patches (``ax.patches``) and, with ``annotate``, ``n`` texts.
    """
    names, values = _named_values(names, values)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"values must all be finite; got {values.tolist()}")

    n = values.size
    fig = _new_figure((CURVE_FIGSIZE[0], 0.9 + 0.45 * n))
    ax = fig.add_subplot()
    positions = np.arange(n)
    ax.barh(positions, values, height=0.6, color="C0", alpha=0.85)
    ax.set_yticks(positions, names)
    ax.invert_yaxis()  # first name on top
    ax.axvline(0.0, color="0.2", linewidth=0.8)
    if annotate:
        for position, value in zip(positions, values):
            ax.annotate(fmt.format(value), (value, position),
                        xytext=(4 if value >= 0 else -4, 0), textcoords="offset points",
                        ha="left" if value >= 0 else "right", va="center", fontsize="small")
        # room for the written values beyond the longest bar
        low, high = min(0.0, values.min()), max(0.0, values.max())
        margin = 0.15 * (high - low if high > low else 1.0)
        ax.set_xlim(low - (margin if low < 0 else 0.0), high + (margin if high > 0 else 0.0))
    ax.set_xlabel(ylabel)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_gaps(names, values, reference, path=None, reference_name="the reference",
              xlabel="nats per example", title=None, fmt="{:+.3g}"):
    """Differences from a reference value, drawn as horizontal bars on a logarithmic axis.

    For numbers that differ by much less than their size: test NLLs of 22.4 nats that differ by
    0.001 to 0.04 nats are indistinguishable as bars from zero, but their differences are not.
    Each bar's length is ``|value - reference|`` on a log scale; red bars are above the reference
    (worse, for a loss in nats), green bars below it (better), and each bar is labelled with the
    signed difference. A difference of exactly zero is written, not drawn.

    Parameters
    ----------
    names : sequence of str, (n,)
        One label per bar.
    values : array_like, (n,)
        The numbers, e.g. test −log p(x) of several models.
    reference : float or array_like (n,)
        The value each number is compared with: one for all (e.g. pPCA's exact test NLL) or one per
        row (e.g. the pPCA of the same latent size).
    path : str or os.PathLike, optional
        Where to save the figure.
    reference_name : str
        What the reference is, for the axis label ("difference from <reference_name>").
    xlabel : str
        Unit of the differences.
    title : str, optional
        Axes title.
    fmt : str
        Format of the signed differences written beside the bars.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes with a log x axis; ``ax.patches`` holds one bar per non-zero difference.
    """
    from matplotlib.patches import Patch

    names, values = _named_values(names, values)
    reference = np.broadcast_to(np.asarray(reference, dtype=float), values.shape) \
        if np.ndim(reference) == 0 else np.asarray(reference, dtype=float)
    if reference.shape != values.shape:
        raise ValueError(
            f"reference must be one number or one per value ({values.size}); got shape "
            f"{reference.shape}")
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(reference))):
        raise ValueError(f"values and reference must be finite; got values {values.tolist()} and "
                         f"reference {reference.tolist()}")

    gaps = values - reference
    sizes = np.abs(gaps)
    nonzero = sizes > 0
    n = values.size
    fig = _new_figure((GAPS_WIDTH_INCHES, 1.4 + 0.45 * n))
    ax = fig.add_subplot()
    positions = np.arange(n)
    if np.any(nonzero):
        low, high = float(sizes[nonzero].min()), float(sizes[nonzero].max())
    else:
        low, high = 1.0, 1.0
    left = 10 ** (math.floor(math.log10(low)) - 0.3)  # bars start here, a bit below the smallest
    colors = np.where(gaps > 0, "C3", "C2")
    ax.barh(positions[nonzero], sizes[nonzero] - left, left=left, height=0.6,
            color=colors[nonzero], alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlim(left, high * 8)  # room for the written differences
    for position, gap, size in zip(positions, gaps, sizes):
        ax.annotate(fmt.format(gap) if size > 0 else "0", (size if size > 0 else left, position),
                    xytext=(4, 0), textcoords="offset points", ha="left", va="center",
                    fontsize="small")
    ax.set_yticks(positions, names)
    ax.invert_yaxis()  # first name on top
    ax.set_xlabel(f"|difference from {reference_name}|, {xlabel} (log scale)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    handles = [Patch(color="C3", alpha=0.85, label=f"above {reference_name}"),
               Patch(color="C2", alpha=0.85, label=f"below {reference_name}")]
    fig.legend(handles=[h for h, present in zip(handles, (np.any(gaps > 0), np.any(gaps < 0)))
                        if present], loc="outside lower center", ncols=2, frameon=False)
    if title:
        ax.set_title(title)
    return _finish(fig, path)
