import struct
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from bptt.diagnostics import plots
from bptt.diagnostics import ParameterGradNorms

LAG = np.arange(40)[::-1]      # timestep t has lag 39 - t


def decay():
    rng = np.random.default_rng(0)
    return {"rnn": 0.5 ** LAG * rng.uniform(0.8, 1.2, (3, 40)), "lstm": 2.0 * 0.9 ** LAG}


def spectrum():
    return {"lstm": np.stack([0.9 ** LAG, 0.5 * 0.8 ** LAG, 0.1 * 0.7 ** LAG], axis=1)}


def grads():
    return ParameterGradNorms(names=("rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight"),
                              mean=np.array([1e-3, 2e-4, 0.0]), max=np.array([1e-2, 3e-3, 0.0]),
                              norm=np.array([0.1, 0.01, 0.0]))


def heatmap():
    return np.stack([0.8 ** LAG, 0.6 ** LAG])


def training():
    val = np.full(60, np.nan)
    val[9::10] = np.linspace(0.2, 0.01, 6)
    return {"step": np.arange(1, 61), "train_loss": 0.2 * 0.95 ** np.arange(60), "val_metric": val}


def predictions():
    t = np.linspace(0, 6, 30)
    y = np.sin(t)[None, :, None]
    return y + 0.05, y, np.ones(1)


PLOTS = {"decay": (plots.plot_gradient_decay, decay), "spectrum": (plots.plot_jacobian_spectrum, spectrum),
         "grad_flow": (plots.plot_parameter_grad_flow, grads), "heatmap": (plots.plot_gradient_heatmap, heatmap),
         "training": (lambda m, **kw: plots.plot_training(m, "mse", **kw), training),
         "predictions": (lambda a, **kw: plots.plot_predictions(*a, **kw), predictions)}


def check_image(path, ext):
    blob = path.read_bytes()
    if ext == "png":
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and blob[12:16] == b"IHDR"
        width, height = struct.unpack(">II", blob[16:24])
        assert width > 100 and height > 100
        assert blob[-8:-4] == b"IEND"
    elif ext == "svg":
        assert blob.startswith(b"<?xml") and b"<svg" in blob[:2000] and blob.rstrip().endswith(b"</svg>")
        assert blob.count(b"<path") > 5
    else:
        assert blob.startswith(b"%PDF-") and blob.rstrip().endswith(b"%%EOF")
    assert len(blob) > 2000


@pytest.mark.parametrize("ext", ["png", "svg", "pdf"])
@pytest.mark.parametrize("name", list(PLOTS))
def test_each_plot_writes_a_valid_image(name, ext, tmp_path):
    fn, args = PLOTS[name]
    path = tmp_path / "sub" / f"{name}.{ext}"
    fig = fn(args(), path=path)
    assert isinstance(fig, Figure)
    check_image(path, ext)


def test_decay_plot_draws_lags_median_band_fit_and_truncation():
    fig = plots.plot_gradient_decay(decay(), truncation={"rnn": 5, "lstm": 12})
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    rnn = next(v for k, v in lines.items() if k.startswith("rnn"))
    # x is the lag; at lag 0 the median of the three rows
    np.testing.assert_array_equal(rnn.get_xdata(), np.arange(40))
    assert rnn.get_ydata()[0] == pytest.approx(np.median(decay()["rnn"][:, -1]))
    lstm_label = next(k for k in lines if k.startswith("lstm"))
    assert f"rate {np.log(0.9):+.4f}/step" in lstm_label and "x0.9000" in lstm_label
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1   # a band for rnn only
    verticals = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":")
    assert verticals == [5, 12]
    assert ax.get_yscale() == "log"


def test_decay_plot_normalizes_to_lag_zero():
    fig = plots.plot_gradient_decay({"lstm": 2.0 * 0.9 ** LAG}, normalize=True, fit=False)
    line = fig.axes[0].get_lines()[0]
    assert line.get_label() == "lstm"
    np.testing.assert_allclose(line.get_ydata(), 0.9 ** np.arange(40))


def test_plots_draw_into_a_given_axes():
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert plots.plot_gradient_heatmap(heatmap(), ax=axes[1], labels=["layer 0", "layer 1"]) is fig
    assert len(axes[1].images) == 1 and not axes[0].images


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"plots: cannot write .*x\.jpg.*\.png, \.svg, \.pdf"):
        plots.plot_gradient_decay(decay(), path=tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="plot_gradient_decay: curves is empty"):
        plots.plot_gradient_decay({})
    with pytest.raises(ValueError, match=r"plot_gradient_decay: 'a' must be a curve \(T,\) or curves \(R, T\)"):
        plots.plot_gradient_decay({"a": np.ones((2, 3, 4))})
    with pytest.raises(ValueError, match=r"plot_gradient_heatmap: norms must be 2-D \(rows, T\), got shape \(5,\)"):
        plots.plot_gradient_heatmap(np.ones(5))
    with pytest.raises(ValueError, match="plot_gradient_heatmap: 3 labels for 2 rows"):
        plots.plot_gradient_heatmap(heatmap(), labels=["a", "b", "c"])
    with pytest.raises(TypeError, match="plot_parameter_grad_flow: need the result of diagnostics"):
        plots.plot_parameter_grad_flow({"w": 1.0})


def test_no_pyplot_and_the_users_backend_is_kept(tmp_path):
    code = ("import sys, matplotlib; matplotlib.use('pdf'); import numpy as np; from bptt.diagnostics import plots; "
            f"plots.plot_gradient_decay({{'a': 0.5 ** np.arange(9.0)}}, path=r'{tmp_path / 'a.png'}'); "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["pdf", "False"]
    check_image(tmp_path / "a.png", "png")
