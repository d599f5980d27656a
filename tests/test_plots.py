"""Tests for minivae.plots: files written, artists drawn, errors raised, no global state touched."""

import subprocess
import sys
import types

import numpy as np
import pytest

from minivae import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Smaller than any figure made here (the smallest, a 1-row image strip, is about 2.8 kB).
MIN_PNG_BYTES = 2000


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def images(rng):
    """Seven random 'images' of 8x8 pixels with values in [0, 16]."""
    return rng.uniform(0.0, 16.0, size=(7, 64))


def assert_png(path):
    """The file is a PNG that matplotlib can read back, not tiny and not of one flat colour."""
    import matplotlib.image

    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > MIN_PNG_BYTES, f"{path} is only {len(data)} bytes"
    pixels = matplotlib.image.imread(path)
    assert min(pixels.shape[:2]) > 50, f"{path} is only {pixels.shape[:2]} pixels"
    assert np.ptp(pixels[..., :3]) > 0.5, f"{path} is nearly one colour"


def history(train_loss, val_loss=(), best_epoch=None):
    return types.SimpleNamespace(train_loss=list(train_loss), val_loss=list(val_loss),
                                 best_epoch=best_epoch)


# ---------------------------------------------------------------------------------------------
# Import and global state
# ---------------------------------------------------------------------------------------------

def test_import_does_not_import_matplotlib():
    code = ("import sys, minivae.plots; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plotting_does_not_use_pyplot(tmp_path):
    # Drawing builds Figures directly: pyplot (and with it a global backend) is never loaded.
    code = (
        "import sys, numpy as np, minivae.plots as p; "
        f"p.plot_samples(np.ones((4, 64)), path={str(tmp_path / 'a.png')!r}); "
        "p.plot_lines({'a': ([1, 2], [3, 4])}); "
        "assert 'matplotlib' in sys.modules; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def test_image_grid_mosaic_layout_and_values(images):
    image = plots.image_grid(images, image_shape=(8, 8), ncols=3)
    mosaic = image.get_array()
    # 7 images in 3 columns -> 3 rows; 8 pixels per image plus a 1-pixel gap between images
    assert mosaic.shape == (3 * 9 - 1, 3 * 9 - 1)
    # image 4 sits in row 1, column 1, unchanged
    np.testing.assert_array_equal(mosaic[9:17, 9:17], images[4].reshape(8, 8))
    np.testing.assert_array_equal(mosaic[18:26, 0:8], images[6].reshape(8, 8))
    assert not mosaic[9:17, 9:17].mask.any()
    # gaps and the two unused cells are masked
    assert mosaic.mask[8, :].all() and mosaic.mask[:, 17].all()
    assert mosaic.mask[18:26, 9:].all()
    assert mosaic.count() == images.size
    # the unused cells are transparent, the rest (images and gaps) opaque
    alpha = image.get_alpha()
    assert np.all(alpha[18:26, 9:] == 0.0)
    assert np.all(alpha[:18, :] == 1.0) and np.all(alpha[18:26, :9] == 1.0)
    # default colour limits: 0 (blank) to the largest value
    assert image.get_clim() == (0.0, images.max())
    fig = image.axes.figure
    assert len(fig.axes) == 1


def test_image_grid_draws_into_given_axes_with_rectangular_images(rng):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    images = rng.normal(size=(4, 6))  # 2x3 images, some negative values
    image = plots.image_grid(images, image_shape=(2, 3), ax=ax, vmax=5.0)
    assert image.axes is ax
    assert image.get_array().shape == (2 * 3 - 1, 2 * 4 - 1)  # ceil(sqrt(4)) = 2 columns
    np.testing.assert_array_equal(image.get_array()[3:5, 4:7], images[3].reshape(2, 3))
    assert image.get_clim() == (images.min(), 5.0)


def test_plot_samples(tmp_path, images):
    path = tmp_path / "nested" / "folder" / "samples.png"  # parent folders get created
    fig = plots.plot_samples(images, path=path, ncols=4)
    assert_png(path)
    (ax,) = fig.axes
    assert ax.get_title() == "Samples from the prior"
    (image,) = ax.get_images()
    assert image.get_array().shape == (2 * 9 - 1, 4 * 9 - 1)


def test_plot_reconstructions(tmp_path, images):
    reconstructed = images[::-1] / 2.0
    path = tmp_path / "reconstructions.png"
    fig = plots.plot_reconstructions(images, reconstructed, path=path, n=5)
    assert_png(path)
    (ax,) = fig.axes
    (image,) = ax.get_images()
    mosaic = image.get_array()
    assert mosaic.shape == (2 * 9 - 1, 5 * 9 - 1)
    np.testing.assert_array_equal(mosaic[0:8, 9:17], images[1].reshape(8, 8))
    np.testing.assert_array_equal(mosaic[9:17, 9:17], reconstructed[1].reshape(8, 8))
    assert [label.get_text() for label in ax.get_yticklabels()] == ["data", "reconstruction"]
    # one colour scale for both rows
    assert image.get_clim() == (0.0, max(images[:5].max(), reconstructed[:5].max()))


def test_plot_reconstructions_shows_at_most_the_batch(images):
    fig = plots.plot_reconstructions(images[:3], images[:3], n=10)
    assert fig.axes[0].get_images()[0].get_array().shape == (17, 3 * 9 - 1)


def test_plot_interpolation(tmp_path, images):
    path = tmp_path / "interpolation.png"
    fig = plots.plot_interpolation(images, path=path)
    assert_png(path)
    (image,) = fig.axes[0].get_images()
    assert image.get_array().shape == (8, 7 * 9 - 1)  # one row


# ---------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------

def test_plot_history_with_validation(tmp_path):
    train = [40.0, 33.0, 30.0, 29.0, 28.5]
    val = [41.0, 34.0, 31.5, 31.0, 31.2]
    path = tmp_path / "history.png"
    fig = plots.plot_history(history(train, val, best_epoch=4), path=path, title="run")
    assert_png(path)
    (ax,) = fig.axes
    assert len(ax.lines) == 2
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3, 4, 5])  # 1-based epochs
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), val)
    (dot,) = ax.collections[1:]  # the dotted vertical line, then the dot
    np.testing.assert_array_equal(dot.get_offsets(), [[4.0, 31.0]])
    assert ax.collections[0].get_segments()[0][0][0] == 4.0  # vertical line at epoch 4
    assert ax.get_ylabel() == "\u2212ELBO (nats per example)"
    assert ax.get_title() == "run"
    assert "epoch 4" in " ".join(t.get_text() for t in ax.get_legend().get_texts())


def test_plot_history_training_only():
    fig = plots.plot_history(history([3.0, 2.0, 1.5]))
    (ax,) = fig.axes
    assert len(ax.lines) == 1
    assert len(ax.collections) == 0


def test_plot_history_accepts_a_dict():
    fig = plots.plot_history({"train_loss": [3.0, 2.0], "val_loss": [3.5, 2.5],
                              "best_epoch": 2})
    assert len(fig.axes[0].lines) == 2


def test_plot_history_zooms_past_huge_early_epochs():
    train = [1000.0, 200.0] + list(np.linspace(30.0, 25.0, 38))
    fig = plots.plot_history(history(train))
    bottom, top = fig.axes[0].get_ylim()
    assert 30.0 < top < 31.0  # largest value after the first 4 epochs, plus 10% of the span
    assert 24.0 < bottom < 25.0
    assert any("zoomed" in text.get_text() for text in fig.axes[0].texts)


def test_plot_history_does_not_zoom_a_gentle_curve():
    train = list(np.linspace(30.0, 25.0, 40))
    fig = plots.plot_history(history(train, train, best_epoch=40))
    bottom, top = fig.axes[0].get_ylim()
    assert bottom < 25.0 and top > 30.0
    assert not fig.axes[0].texts


def test_plot_lines(tmp_path):
    x = np.arange(1, 21)
    path = tmp_path / "lines.png"
    fig = plots.plot_lines({"VAE": (x, 30.0 - np.log(x)), "other": (x, 31.0 - np.log(x))},
                           path=path, xlabel="epoch", ylabel="nats", logx=True,
                           hlines={"pPCA maximum": 26.5}, title="approach")
    assert_png(path)
    (ax,) = fig.axes
    assert len(ax.lines) == 3
    assert ax.lines[2].get_linestyle() == "--"
    np.testing.assert_array_equal(ax.lines[2].get_ydata(), [26.5, 26.5])
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["VAE", "other"] and labels[2].startswith("pPCA maximum")


def test_plot_latent_two_columns_with_labels(tmp_path, rng):
    z = rng.normal(size=(30, 2))
    labels = np.repeat([0, 1, 2], 10)
    path = tmp_path / "latent.png"
    fig = plots.plot_latent(z, labels, path=path, title="codes")
    assert_png(path)
    ax = fig.axes[0]
    (scatter,) = ax.collections
    np.testing.assert_allclose(scatter.get_offsets(), z)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
    # each class has its own colour, and the same one within the class
    colors = scatter.get_facecolors()
    assert len({tuple(c) for c in colors}) == 3
    np.testing.assert_array_equal(colors[0], colors[9])


def test_plot_latent_projects_wide_codes_onto_principal_components(tmp_path, rng):
    # Codes that vary mostly along (1, 1, 0, 0), a little along (0, 0, 1, 0): PC 1 recovers them.
    n = 40
    big, small = rng.normal(0.0, 3.0, n), rng.normal(0.0, 0.5, n)
    big, small = big - big.mean(), small - small.mean()
    small -= (small @ big) / (big @ big) * big  # uncorrelated in the sample: PC 1 is exact
    z = np.column_stack([big, big, small, np.zeros(n)]) / np.array([np.sqrt(2)] * 2 + [1, 1])
    fig = plots.plot_latent(z, path=tmp_path / "latent4.png")
    assert_png(tmp_path / "latent4.png")
    ax = fig.axes[0]
    points = ax.collections[0].get_offsets()
    assert points.shape == (n, 2)
    np.testing.assert_allclose(np.abs(points[:, 0]), np.abs(big), atol=1e-10)
    np.testing.assert_allclose(np.abs(points[:, 1]), np.abs(small), atol=1e-10)
    assert ax.get_xlabel().startswith("PC 1") and ax.get_ylabel().startswith("PC 2")


def test_plot_latent_one_column_against_index(rng):
    z = rng.normal(size=(12, 1))
    fig = plots.plot_latent(z, labels=np.arange(12) % 4)
    points = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(points, np.column_stack([z[:, 0], np.arange(12)]))


def test_plot_latent_many_classes_uses_a_colorbar(rng):
    fig = plots.plot_latent(rng.normal(size=(50, 2)), labels=np.arange(50) % 25)
    assert len(fig.axes) == 2  # the scatter and its colorbar
    assert fig.axes[0].get_legend() is None


def test_plot_bars(tmp_path):
    names = ["pPCA", "VAE, latent 2", "VAE, latent 8"]
    values = [27.31, 29.9, -1.5]
    path = tmp_path / "bars.png"
    fig = plots.plot_bars(names, values, path=path, title="test")
    assert_png(path)
    (ax,) = fig.axes
    assert len(ax.patches) == 3
    np.testing.assert_allclose([bar.get_width() for bar in ax.patches], values)
    assert [t.get_text() for t in ax.texts] == ["27.31", "29.90", "-1.50"]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xlim()[1] > 29.9 and ax.get_xlim()[0] < -1.5  # room for the numbers
    fig = plots.plot_bars(names, values, annotate=False)
    assert not fig.axes[0].texts


def test_save_figure_creates_folders_and_returns_path(tmp_path):
    fig = plots.plot_lines({"a": ([1, 2, 3], [3, 1, 2])})
    path = tmp_path / "a" / "b" / "lines.png"
    assert plots.save_figure(fig, str(path)) == path
    assert_png(path)
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure"):
        plots.save_figure("not a figure", path)


# ---------------------------------------------------------------------------------------------
# Errors name the argument, what was expected and what was given
# ---------------------------------------------------------------------------------------------

def test_image_errors(images):
    with pytest.raises(ValueError, match=r"images have 63 values per row; image_shape \(8, 8\) "
                                         r"needs 64"):
        plots.image_grid(images[:, :63])
    with pytest.raises(ValueError, match=r"images must be a 2-D array.*shape \(64,\)"):
        plots.image_grid(images[0])
    with pytest.raises(ValueError, match="image_shape must be two positive integers"):
        plots.image_grid(images, image_shape=(8, 0))
    with pytest.raises(ValueError, match="ncols must be a positive integer; got 0"):
        plots.image_grid(images, ncols=0)
    with pytest.raises(ValueError, match="vmax must be greater than vmin"):
        plots.image_grid(images, vmin=3.0, vmax=1.0)
    with pytest.raises(ValueError, match="samples have 10 values per row"):
        plots.plot_samples(np.zeros((2, 10)))
    with pytest.raises(ValueError, match=r"x_reconstructed have 60 values per row"):
        plots.plot_reconstructions(images, images[:, :60])
    with pytest.raises(ValueError, match=r"same shape; got \(7, 64\) and \(6, 64\)"):
        plots.plot_reconstructions(images, images[:6])


def test_history_errors():
    with pytest.raises(ValueError, match="history.train_loss must be a non-empty list"):
        plots.plot_history(history([]))
    with pytest.raises(ValueError, match=r"val_loss must be empty or hold one value per epoch "
                                         r"\(3\); got shape \(2,\)"):
        plots.plot_history(history([3, 2, 1], [3, 2]))
    with pytest.raises(ValueError, match=r"best_epoch must be None or an epoch counted from 1 \(1..3\).*got 4"):
        plots.plot_history(history([3, 2, 1], [3, 2, 1], best_epoch=4))
    with pytest.raises(ValueError, match="best_epoch .* got 0 with 3 validation values"):
        plots.plot_history(history([3, 2, 1], [3, 2, 1], best_epoch=0))
    with pytest.raises(ValueError, match="best_epoch .* got 1 with 0 validation values"):
        plots.plot_history(history([3, 2, 1], [], best_epoch=1))
    with pytest.raises(TypeError, match="history must have attributes.*no 'best_epoch'"):
        plots.plot_history(types.SimpleNamespace(train_loss=[1.0], val_loss=[]))


def test_curve_errors():
    with pytest.raises(ValueError, match="curves must be a non-empty dict"):
        plots.plot_lines({})
    with pytest.raises(ValueError, match=r"curves\['a'\] must be two non-empty 1-D arrays of "
                                         r"the same length; got x of shape \(3,\) and y of "
                                         r"shape \(2,\)"):
        plots.plot_lines({"a": ([1, 2, 3], [1, 2])})
    with pytest.raises(ValueError, match=r"curves\['a'\] must be a pair \(x, y\)"):
        plots.plot_lines({"a": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"logx=True needs positive x values; curves\['a'\]"):
        plots.plot_lines({"a": ([0, 1], [1, 2])}, logx=True)
    with pytest.raises(ValueError, match=r"hlines\['pPCA'\] must be a number"):
        plots.plot_lines({"a": ([1, 2], [1, 2])}, hlines={"pPCA": "high"})


def test_latent_and_bar_errors(rng):
    with pytest.raises(ValueError, match=r"labels must have one entry per row of z, shape "
                                         r"\(5,\); got shape \(4,\)"):
        plots.plot_latent(rng.normal(size=(5, 2)), labels=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"z must be a 2-D array .* got shape \(2, 3, 4\)"):
        plots.plot_latent(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"got 2 names and values of shape \(3,\)"):
        plots.plot_bars(["a", "b"], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="values must all be finite"):
        plots.plot_bars(["a", "b"], [1.0, np.nan])


# ---------------------------------------------------------------------------------------------
# Figures for slides: titles, gaps on a log axis, latent scatter shape, fonts, vector formats
# ---------------------------------------------------------------------------------------------

def test_image_figures_have_titles(images):
    reconstructions = plots.plot_reconstructions(images, images, n=4)
    assert reconstructions.axes[0].get_title() == "Data and their reconstructions"
    assert plots.plot_reconstructions(images, images, title="Test digits").axes[0].get_title() == "Test digits"
    assert plots.plot_reconstructions(images, images, title=None).axes[0].get_title() == ""
    assert plots.plot_interpolation(images[:5]).axes[0].get_title()
    assert plots.plot_samples(images).axes[0].get_title()


def test_plot_gaps_draws_differences_on_a_log_axis(tmp_path):
    names = ["-ELBO", "-log p(x), exact", "same as pPCA", "Gaussian VAE"]
    values = [22.44, 22.401, 22.4, 12.4]
    path = tmp_path / "gaps.png"
    fig = plots.plot_gaps(names, values, 22.4, path=path, reference_name="pPCA")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    bars = ax.patches
    assert len(bars) == 3  # the zero difference is written, not drawn
    right_ends = sorted(bar.get_x() + bar.get_width() for bar in bars)
    assert right_ends == pytest.approx([0.001, 0.04, 10.0], rel=1e-9)
    lengths_on_screen = [np.log10(bar.get_x() + bar.get_width()) - np.log10(bar.get_x()) for bar in bars]
    assert min(lengths_on_screen) > 0.2  # even the 0.001-nat gap is a visible bar
    texts = [text.get_text() for text in ax.texts]
    assert texts == ["+0.04", "+0.001", "0", "-10"]
    colours = {bar.get_facecolor()[:3] for bar in bars}
    assert len(colours) == 2  # worse and better than the reference differ in colour
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_gaps_with_a_reference_per_row_and_bad_input():
    fig = plots.plot_gaps(["a", "b"], [2.5, 10.01], [2.0, 10.0])
    assert [t.get_text() for t in fig.axes[0].texts] == ["+0.5", "+0.01"]
    with pytest.raises(ValueError, match="one per value"):
        plots.plot_gaps(["a", "b"], [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        plots.plot_gaps(["a"], [np.nan], 1.0)
    with pytest.raises(ValueError, match="equal length"):
        plots.plot_gaps(["a", "b"], [1.0], 1.0)


def test_latent_scatter_fills_its_width(rng):
    """The plot area takes the shape of the points, so an equal-aspect scatter leaves no empty bands."""
    z = rng.standard_normal((400, 16)) * np.linspace(2.0, 0.3, 16)
    labels = rng.integers(0, 10, 400)
    fig = plots.plot_latent(z, labels)
    fig.canvas.draw()
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    points = ax.collections[0].get_offsets()
    x_share = np.ptp(points[:, 0]) / (x1 - x0)
    y_share = np.ptp(points[:, 1]) / (y1 - y0)
    assert x_share > 0.8 and y_share > 0.8, (x_share, y_share)


def test_fontscale_enlarges_the_fonts_and_restores_them():
    import matplotlib

    default = matplotlib.rcParams["font.size"]
    with plots.fontscale(1.5):
        big = plots.plot_lines({"a": ([1, 2], [3, 4])}, title="t")
    small = plots.plot_lines({"a": ([1, 2], [3, 4])}, title="t")
    assert matplotlib.rcParams["font.size"] == default
    size = lambda fig: fig.axes[0].xaxis.label.get_fontsize()
    assert size(big) == pytest.approx(1.5 * size(small))
    try:
        plots.set_fontscale(2)
        assert size(plots.plot_lines({"a": ([1, 2], [3, 4])})) == pytest.approx(2 * size(small))
    finally:
        plots.set_fontscale(1)
    with pytest.raises(ValueError, match="scale"):
        plots.fontscale(0)
    with pytest.raises(TypeError, match="scale"):
        plots.set_fontscale("big")


@pytest.mark.parametrize("suffix, signature", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_save_figure_writes_the_format_of_the_suffix(tmp_path, suffix, signature):
    fig = plots.plot_lines({"a": ([1, 2], [3, 4])})
    path = plots.save_figure(fig, tmp_path / f"figure{suffix}")
    assert path.read_bytes()[:len(signature)] == signature


def test_plot_history_names_the_validation_loss_on_its_axis():
    train, val = [10.0, 9.0, 8.5], [10.5, 9.5, 9.0]
    iwae = {"train_loss": train, "val_loss": val, "best_epoch": 3, "val_loss_name": "-L_5"}
    assert plots.plot_history(iwae).axes[0].get_ylabel() == "\u2212L_5 (nats per example)"
    for elbo in ({"train_loss": train, "val_loss": val, "best_epoch": 3},                     # no name: the -ELBO
                 types.SimpleNamespace(train_loss=train, val_loss=val, best_epoch=3, val_loss_name="-ELBO")):
        assert plots.plot_history(elbo).axes[0].get_ylabel() == plots.NEG_ELBO_LABEL
