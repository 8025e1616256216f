"""declebm.plot: reachable from `import declebm`, matplotlib imported only by a plot, a
clear ImportError naming the extra without it, and curves drawing what the history has."""

import subprocess
import sys
import warnings

import numpy as np
import pytest


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_plot_is_an_attribute_of_declebm_without_importing_matplotlib():
    proc = _python(
        "import sys, declebm\n"
        "assert callable(declebm.plot.density) and callable(declebm.plot.curves)\n"
        "print('matplotlib' in sys.modules)\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_missing_matplotlib_names_the_plot_extra():
    # sys.modules[name] = None makes `import name` raise ImportError: matplotlib "missing".
    proc = _python(
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "sys.modules['matplotlib.pyplot'] = None\n"
        "import declebm\n"
        "plot = declebm.plot\n"
        "try:\n"
        "    plot.figure(1, 2)\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ImportError:" in proc.stdout and "declebm[plot]" in proc.stdout and "matplotlib" in proc.stdout


def test_curves_draws_the_metrics_the_history_has():
    pytest.importorskip("matplotlib")
    import declebm as eb

    history = {"step": np.arange(1, 4), "time": np.ones(3), "loss": np.ones(3), "accuracy": np.ones(3)}
    ax = eb.plot.curves(history)  # default: every metric
    assert sorted(line.get_label() for line in ax.lines) == ["accuracy", "loss"]
    with pytest.warns(UserWarning, match="energy_data"):
        ax = eb.plot.curves(history, ["energy_data", "loss"])  # a score-matching run asked for MCMC curves
    assert [line.get_label() for line in ax.lines] == ["loss"]
    with pytest.raises(ValueError, match="^keys: .*accuracy"):
        eb.plot.curves(history, ["energy_data", "energy_samples"])
    with pytest.raises(TypeError, match="^history"):
        eb.plot.curves([1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eb.plot.curves(history, "loss")  # one name as a string


def test_samples_on_high_dimensional_data_says_which_dims_it_draws():
    pytest.importorskip("matplotlib")
    import declebm as eb

    x = np.random.default_rng(0).normal(size=(50, 64))
    with pytest.warns(UserWarning, match=r"64 dimensions; drawing dimensions \(0, 1\).*dims="):
        ax = eb.plot.samples(x)  # it drew dims 0 and 1 without a word
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), x[:, [0, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = eb.plot.samples(x, dims=(5, 17))
        eb.plot.samples(x[:, :2])  # 2-D data: nothing to say
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), x[:, [5, 17]])
    with pytest.raises(ValueError, match=r"^dims: .*64 dimensions"):
        eb.plot.samples(x, dims=(0, 64))
    with pytest.raises(ValueError, match=r"^x: .*plot.images"):
        eb.plot.samples(np.zeros((4, 1, 8, 8)))


def test_image_grid_tiles_images_as_an_array_without_matplotlib():
    import declebm as eb

    x = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2) / 11.0  # three 2x2 grey images in [0, 1]
    grid = eb.plot.image_grid(x, ncols=2, pad=1)
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 3)  # two rows, two columns of 2x2 with one pixel between
    np.testing.assert_array_equal(grid[1:3, 1:3], x[0])
    np.testing.assert_array_equal(grid[1:3, 4:6], x[1])
    np.testing.assert_array_equal(grid[4:6, 1:3], x[2])
    np.testing.assert_array_equal(grid[4:6, 4:6], 1.0)  # the empty cell is background
    colour = eb.plot.image_grid(np.zeros((2, 3, 2, 2)), vmin=-1.0, vmax=1.0, pad=0)  # (n, C, H, W)
    assert colour.shape == (2, 4, 3) and np.all(colour == 0.5)
    with pytest.raises(ValueError, match="^pad:"):
        eb.plot.image_grid(x, pad=-1)
