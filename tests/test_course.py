"""minivae.course: run sizes, figure paths and formats, inline display, checked claims, the cached
reference model."""

import io
import sys
import types

import numpy as np
import pytest

from minivae import course


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in (course.SIZE_VARIABLE, course.QUICK_VARIABLE, course.FORMAT_VARIABLE,
                 course.FONTSCALE_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(course.FIGURES_VARIABLE, str(tmp_path / "figures"))
    return monkeypatch


def test_sizes(env):
    assert course.size_name() == "full" and course.full() and not course.quick()
    assert course.size(100, 2, lab=30) == 100
    env.setenv(course.QUICK_VARIABLE, "1")  # the older spelling
    assert course.size_name() == "quick" and course.quick()
    assert course.size(100, 2, lab=30) == 2
    env.setenv(course.SIZE_VARIABLE, "lab")  # MINIVAE_SIZE wins
    assert course.size_name() == "lab"
    assert course.size(100, 2, lab=30) == 30
    assert course.size(100, 2) == 100  # no lab value: the full one
    env.setenv(course.SIZE_VARIABLE, "huge")
    with pytest.raises(ValueError, match="MINIVAE_SIZE must be one of quick, lab, full; got 'huge'"):
        course.size_name()
    env.delenv(course.SIZE_VARIABLE)
    env.setenv(course.QUICK_VARIABLE, "0")
    assert course.size_name() == "full"


def test_figure_path_and_format(env, tmp_path, capsys):
    path = course.figure_path("01_x", "a.png")
    assert path == tmp_path / "figures" / "01_x" / "a.png" and path.parent.is_dir()
    assert f"figure: {path}" in capsys.readouterr().out
    env.setenv(course.FORMAT_VARIABLE, "svg")
    assert course.figure_path("01_x", "a.png").name == "a.svg"


def test_claims_stop_a_full_run_and_only_print_otherwise(env, capsys):
    assert course.claim(True, "two is more than one")
    assert "claim holds: two is more than one" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="the prose says: one is more than two"):
        course.claim(False, "one is more than two")
    env.setenv(course.SIZE_VARIABLE, "quick")
    assert course.claim(np.bool_(False), "one is more than two") is False
    assert "claim does NOT hold: one is more than two" in capsys.readouterr().out


def test_show_does_nothing_outside_a_kernel(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert course.show(object()) is None  # not even looked at: no IPython loaded


def test_show_sends_a_png_to_a_kernel(monkeypatch):
    """Inside a kernel (an IPython shell with a kernel), the figure goes out as image/png."""
    from minivae import plots

    shown = []
    display_module = types.ModuleType("IPython.display")

    class Image:
        def __init__(self, data, format):
            self.data, self.format = data, format

    display_module.Image = Image
    display_module.display = shown.append
    ipython = types.ModuleType("IPython")
    shell = types.SimpleNamespace(kernel=object())
    ipython.get_ipython = lambda: shell
    ipython.version_info = (9, 0)  # matplotlib reads it when IPython is loaded
    ipython.display = display_module
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)

    fig = plots.plot_lines({"a": ([1, 2], [3, 4])})
    assert course.show(fig) is None
    assert len(shown) == 1 and shown[0].format == "png"
    assert shown[0].data[:8] == b"\x89PNG\r\n\x1a\n"

    shell.kernel = None  # a terminal IPython: nothing is sent
    course.show(fig)
    assert len(shown) == 1


def test_fontscale_variable_is_checked(env):
    env.setenv(course.FONTSCALE_VARIABLE, "large")
    with pytest.raises(ValueError, match="MINIVAE_FONTSCALE must be a number"):
        course._apply_fontscale()


def test_reference_model_is_trained_once_and_read_back(env, tmp_path, capsys):
    env.setenv(course.SIZE_VARIABLE, "quick")
    model, history, trained = course.reference_model()
    assert trained and history.epochs == course.QUICK_REFERENCE["max_epochs"]
    assert model.latent_dim == 16 and tuple(model.config["hidden"]) == course.QUICK_REFERENCE["hidden"]
    folder = tmp_path / "figures" / course.REFERENCE_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == sorted(course.REFERENCE_FILES)

    again, history_again, trained_again = course.reference_model()
    assert not trained_again
    assert history_again.to_dict() == history.to_dict()
    for key, value in model.params.items():
        np.testing.assert_array_equal(again.params[key], value)

    # Other settings in the cache: trained again, and the cache rewritten.
    settings = folder / "settings.json"
    settings.write_text(settings.read_text().replace('"patience": 20', '"patience": 3'))
    _, _, retrained = course.reference_model()
    assert retrained and "other settings" in capsys.readouterr().out
    assert '"patience": 20' in settings.read_text()


def test_reference_settings_follow_reference_and_the_code(env):
    from minivae.reference import REFERENCE

    settings = course.reference_settings()
    assert settings["lr"] == REFERENCE.lr and settings["ema"] == REFERENCE.ema
    assert settings["hidden"] == list(REFERENCE.hidden) and settings["size"] == "full"
    assert len(settings["code"]) == 64
    env.setenv(course.SIZE_VARIABLE, "lab")  # a lab uses the full reference model
    assert course.reference_settings() == settings
