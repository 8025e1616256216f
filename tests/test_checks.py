"""The shared argument checks and dtype rules (issue 7, items 1, 3, 4, 17, 18, 19)."""

import importlib
import math
import os
import pathlib
import re
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm._checks import check_number, hyperparameter, optional_term, strong_dtypes
from declebm.inference import (
    HMC,
    MALA,
    NCE,
    NUTS,
    ContrastiveDivergence,
    DenoisingScoreMatching,
    Langevin,
    MaximumLikelihood,
    PersistentCD,
    ReplayBufferML,
    ShortRunML,
    SlicedScoreMatching,
)
from declebm.models import GaussianEnergy, MLPEnergy

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY = jax.random.key(0)


class WeakEnergy(eqx.Module):
    """A quadratic energy whose scale is written the ordinary way: a weakly typed array."""

    a: jax.Array

    def __init__(self):
        self.a = jnp.array(-2.0)  # weak_type=True

    def __call__(self, x):
        return 0.5 * jnp.exp(self.a) * jnp.sum(x**2)


# ---- item 1: weak-typed parameters -----------------------------------------------------


def test_strong_dtypes_keeps_dtype_and_value():
    tree = {"w": jnp.array(-2.0), "s": jnp.ones(2), "n": 3, "i": jnp.array(1)}
    assert tree["w"].weak_type and tree["i"].weak_type
    out = strong_dtypes(tree)
    assert not out["w"].weak_type and out["w"].dtype == tree["w"].dtype and float(out["w"]) == -2.0
    assert not out["i"].weak_type and out["i"].dtype == tree["i"].dtype
    assert out["s"] is tree["s"] and out["n"] == 3


def test_weak_typed_parameter_trains_samples_and_evaluates():
    model = eb.EBM(WeakEnergy(), event_shape=(2,))
    leaves = [x for x in jax.tree.leaves(model) if eqx.is_array(x)]
    assert leaves and not any(x.weak_type for x in leaves)
    x = eb.sample(model, MALA(step_size=0.5), num_samples=16, num_steps=5, key=KEY)
    assert x.shape == (16, 2) and bool(jnp.all(jnp.isfinite(x)))
    assert np.isfinite(float(eb.evaluate.grid_log_z(model, bounds=(-15.0, 15.0), resolution=64)))
    # fit failed with "run_chunk can only be traced 1 times ... 'carry'" on this model.
    data = jax.random.normal(KEY, (64, 2))
    result = eb.fit(model, data, DenoisingScoreMatching(sigma=0.1), num_steps=4, batch_size=16, chunk_size=2,
                    key=KEY, progress=False)
    assert not result.model.energy_module.a.weak_type


# ---- item 3: grid bounds and resolution ------------------------------------------------


def _wide_gaussian_problem():
    # A 1-D Gaussian with standard deviation 6: its data leave the old default box [-5, 5].
    model = eb.EBM(GaussianEnergy(jnp.zeros(1), covariance=jnp.array([[36.0]])))
    data = 6.0 * jax.random.normal(jax.random.key(1), (2000, 1))
    true_nll = 0.5 * math.log(2 * math.pi * 36.0) + 0.5 * float(jnp.mean(data**2)) / 36.0
    return model, data, true_nll


def test_grid_nll_default_bounds_cover_the_data():
    model, data, true_nll = _wide_gaussian_problem()
    assert float(jnp.max(jnp.abs(data))) > 16
    # The default box is the data's range padded; the model's mass beyond it (|x| > ~22,
    # 3.7 sd) is ~2e-4, so the NLL is within ~1e-3 of the exact one (quadrature error at
    # 200 cells is far smaller). The old default [-5, 5] gave a number 1.3 nats too low.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nll = float(eb.evaluate.grid_nll(model, data))
    assert nll == pytest.approx(true_nll, abs=2e-3)


def test_grid_nll_refuses_data_outside_explicit_bounds():
    model, data, _ = _wide_gaussian_problem()
    outside = int(jnp.sum(jnp.abs(data[:, 0]) > 5.0))
    with pytest.raises(ValueError, match=rf"^bounds: {outside} of the 2000 data points"):
        eb.evaluate.grid_nll(model, data, bounds=(-5.0, 5.0))


def test_grid_warns_about_mass_on_the_edge():
    model, _, _ = _wide_gaussian_problem()
    with pytest.warns(RuntimeWarning, match=r"bounds: the cells on the edge .* hold 0\.0"):
        eb.evaluate.grid_log_z(model, bounds=(-5.0, 5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eb.evaluate.grid_log_z(model, bounds=(-40.0, 40.0))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(resolution=1), ValueError, "resolution"),
        # evaluated chunk by chunk, a grid's memory is bounded (tests/test_evaluate_grid.py);
        # its points are numbered by int32
        (dict(resolution=50_000), ValueError, "resolution: a 50000\\^2 grid has 2.5e\\+09 points"),
        (dict(resolution=2.5), TypeError, "resolution"),
        (dict(bounds=(-np.inf, 5.0)), ValueError, "bounds: expected finite"),
        (dict(bounds=(np.nan, 5.0)), ValueError, "bounds: expected finite"),
        (dict(bounds="wide"), TypeError, "bounds"),
    ],
)
def test_grid_refuses_bad_bounds_and_resolution(kwargs, error, match):
    model = eb.EBM(GaussianEnergy(jnp.zeros(2)))
    with pytest.raises(error, match=match):
        eb.evaluate.grid_log_z(model, **kwargs)


# ---- item 4: messages name only real API --------------------------------------------


def test_high_dimensional_grid_message_names_no_missing_api():
    model = eb.EBM(MLPEnergy(3, 8, 1, key=KEY))
    with pytest.raises(ValueError) as err:
        eb.evaluate.grid_log_z(model)
    assert "limited to 1-D and 2-D" in str(err.value)
    assert "AIS" not in str(err.value) or hasattr(eb.inference, "AIS")


def _resolve(path: str) -> bool:
    parts = path.split(".")
    obj = eb
    for i, part in enumerate(parts):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(["declebm", *parts[: i + 1]]))
        except ImportError:
            return False
    return True


def test_every_api_named_in_the_sources_exists():
    # Any `evaluate.x`, `inference.x`, `datasets.x`, `models.x`, `eb.x` or `declebm.x` in the
    # package's messages and docstrings must be a real attribute.
    pattern = re.compile(r"\b(?:eb|declebm)\.([a-z]\w*(?:\.\w+)?)|\b((?:evaluate|inference|datasets|models)\.\w+)")
    missing = []
    for folder in ("declebm", "inference", "models"):
        for file in (ROOT / folder).rglob("*.py"):
            text = file.read_text()
            for m in pattern.finditer(text):
                name = m.group(1) or m.group(2)
                if name.startswith("_"):
                    continue
                if not _resolve(name):
                    missing.append(f"{file.relative_to(ROOT)}: {name}")
    assert not missing, missing


# ---- item 17: every entry point checks its arguments ---------------------------------

_MODEL = eb.EBM(MLPEnergy(2, 8, 1, key=KEY))

BAD_CALLS = [
    ("EBM inverse_temperature -1", lambda: eb.EBM(MLPEnergy(2, key=KEY), inverse_temperature=-1.0), ValueError, "inverse_temperature"),
    ("EBM inverse_temperature nan", lambda: eb.EBM(MLPEnergy(2, key=KEY), inverse_temperature=float("nan")), ValueError, "inverse_temperature"),
    ("EBM inverse_temperature str", lambda: eb.EBM(MLPEnergy(2, key=KEY), inverse_temperature="1"), TypeError, "inverse_temperature"),
    ("EBM log_z bool", lambda: eb.EBM(MLPEnergy(2, key=KEY), log_z=True), TypeError, "log_z"),
    ("EBM event_shape -1", lambda: eb.EBM(WeakEnergy(), event_shape=(-1,)), ValueError, r"event_shape\[0\]"),
    ("EBM event_shape str", lambda: eb.EBM(WeakEnergy(), event_shape="2"), TypeError, "event_shape"),
    ("tempered -1 array", lambda: _MODEL.tempered(jnp.asarray(-1.0)), ValueError, "temperature"),
    ("tempered nan", lambda: _MODEL.tempered(float("nan")), ValueError, "temperature"),
    ("HMC negative mass", lambda: HMC(0.1, inverse_mass_matrix=-jnp.ones(2)), ValueError, "inverse_mass_matrix"),
    ("HMC non-PD dense mass", lambda: HMC(0.1, inverse_mass_matrix=jnp.array([[1.0, 2.0], [2.0, 1.0]])), ValueError, "inverse_mass_matrix"),
    ("HMC wrong-length mass", lambda: eb.sample(_MODEL, HMC(0.1, inverse_mass_matrix=jnp.ones(3)), num_samples=4, num_steps=1, key=KEY), ValueError, "inverse_mass_matrix: has 3 rows"),
    ("NUTS vector step", lambda: NUTS(step_size=jnp.ones(2)), TypeError, "step_size"),
    ("MALA vector step", lambda: MALA(step_size=jnp.array([0.1, 0.2])), TypeError, "step_size"),
    ("MALA string step", lambda: MALA(step_size="0.1"), TypeError, "step_size"),
    ("MALA bool step", lambda: MALA(step_size=True), TypeError, "step_size"),
    ("Langevin inf step", lambda: Langevin(step_size=float("inf")), ValueError, "step_size"),
    ("Langevin negative noise", lambda: Langevin(0.1, noise_scale=-1.0), ValueError, "noise_scale"),
    ("CD num_chains", lambda: ContrastiveDivergence(Langevin(0.1), num_chains=5), ValueError, "num_chains"),
    ("replay reinit_prob 7", lambda: ReplayBufferML(Langevin(0.1), reinit_prob=7), ValueError, "reinit_prob"),
    ("replay reinit_prob True", lambda: ReplayBufferML(Langevin(0.1), reinit_prob=True), TypeError, "reinit_prob"),
    ("ML energy_reg str", lambda: PersistentCD(MALA(0.1), energy_reg="0.1"), TypeError, "energy_reg"),
    ("ML kl_weight nan", lambda: ShortRunML(Langevin(0.1), kl_weight=float("nan")), ValueError, "kl_weight"),
    ("ML init unknown", lambda: MaximumLikelihood(Langevin(0.1), init="nowhere"), ValueError, "init"),
    ("NCE init_log_z str", lambda: NCE(init_log_z="no"), TypeError, "init_log_z"),
    ("NCE ratio 0", lambda: NCE(ratio=0.0), ValueError, "ratio"),
    ("NCE one example", lambda: NCE().init(_MODEL, jnp.ones((1, 2)), KEY), ValueError, "data: NCE"),
    ("NCE constant data", lambda: NCE().init(_MODEL, jnp.ones((10, 2)), KEY), ValueError, "data: NCE"),
    ("DSM sigma string", lambda: DenoisingScoreMatching(sigma="0.1"), TypeError, "sigma"),
    ("SSM projections float", lambda: SlicedScoreMatching(num_projections=1.5), TypeError, "num_projections"),
    ("digits empty train", lambda: eb.datasets.digits(key=KEY, test_fraction=0.9999), ValueError, "test_fraction"),
    ("toy_log_prob 3-D", lambda: eb.datasets.toy_log_prob("8gaussians", jnp.zeros((4, 3))), ValueError, "x: expected 2-D points"),
    ("toy name list", lambda: eb.datasets.toy(["moons"], 10, key=KEY), TypeError, "name"),
    ("mmd NaN", lambda: eb.evaluate.mmd(jnp.full((6, 2), jnp.nan), jnp.zeros((6, 2))), ValueError, "x: contains"),
    ("mmd empty examples", lambda: eb.evaluate.mmd(jnp.zeros((6, 0)), jnp.zeros((6, 0))), ValueError, "x"),
    ("mmd shape mismatch", lambda: eb.evaluate.mmd(jnp.zeros((10, 2)), jnp.zeros((10, 1, 2))), ValueError, "y"),
    ("int energy", lambda: eb.sample(eb.EBM(lambda x: jnp.sum(x).astype(jnp.int32), event_shape=(2,)), MALA(0.1),
                                     num_samples=2, num_steps=1, key=KEY), TypeError, "energy: must return a floating"),
    ("sample num_steps bool", lambda: eb.sample(_MODEL, MALA(0.1), num_samples=2, num_steps=True, key=KEY), TypeError, "num_steps"),
    ("MLP width float", lambda: MLPEnergy(2, 2.5, key=KEY), TypeError, "width"),
    ("MLP key int", lambda: MLPEnergy(2, key=0), TypeError, "key"),
    ("Gaussian mean NaN", lambda: GaussianEnergy(jnp.array([jnp.nan])), ValueError, "mean"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_argument_gets_a_named_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_load_of_a_garbage_file_names_path(tmp_path):
    path = tmp_path / "garbage.npy"
    path.write_bytes(b"this is not a numpy file at all" * 10)
    with pytest.raises(ValueError, match="^path: .*garbage.npy' is not a readable NumPy"):
        eb.datasets.load(path)
    npz = tmp_path / "garbage.npz"
    npz.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match="^path: "):
        eb.datasets.load(npz)


def test_check_number_messages():
    with pytest.raises(TypeError, match=r"^ema_decay: expected a number in \[0, 1\), got str '0.9'"):
        check_number("0.9", "ema_decay", low=0.0, high=1.0, high_open=True)
    assert check_number(np.float32(0.5), "x") == 0.5
    assert check_number(jnp.asarray(3), "n", integer=True) == 3
    with pytest.raises(TypeError, match="^n: expected an integer"):
        check_number(3.0, "n", integer=True)


# ---- item 19: numeric hyperparameters are traced ---------------------------------------


def test_sampler_step_size_sweep_compiles_once(monkeypatch):
    traces = []
    original = MALA.step_chain

    def counting(self, *args):
        traces.append(1)  # runs only while JAX traces the kernel
        return original(self, *args)

    monkeypatch.setattr(MALA, "step_chain", counting)
    model = eb.EBM(GaussianEnergy(jnp.zeros(2)))
    eb.sample(model, MALA(step_size=0.1), num_samples=8, num_steps=3, key=KEY)
    first = len(traces)
    for s in np.linspace(0.05, 0.5, 6):
        eb.sample(model, MALA(step_size=float(s)), num_samples=8, num_steps=3, key=KEY)
    assert first >= 1 and len(traces) == first


def test_strategy_hyperparameters_are_traced():
    model = eb.EBM(GaussianEnergy(jnp.zeros(2)))
    batch = jax.random.normal(KEY, (16, 2))

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def loss(strategy, model, batch, state, key):
        return strategy.loss(model, batch, state, key)[0]

    for reg, prob in ((0.1, 0.05), (0.2, 0.5), (1.0, 1.0)):
        s = ReplayBufferML(Langevin(step_size=reg / 10), steps=2, energy_reg=reg, reinit_prob=prob, buffer_size=32)
        loss(s, model, batch, s.init(model, batch, KEY), KEY)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def dsm_loss(strategy, model, batch, key):
        return strategy.loss(model, batch, None, key)[0]

    values = [float(dsm_loss(DenoisingScoreMatching(sigma=s), model, batch, KEY)) for s in (0.1, 0.3, 1.0)]
    assert len(set(values)) == 3


def test_optional_terms_are_static_switches():
    off, on = optional_term("energy_reg")(0.0), optional_term("energy_reg")(0.5)
    assert off == 0.0 and isinstance(off, float)
    assert isinstance(on, jax.Array) and on.shape == () and float(on) == 0.5
    assert isinstance(hyperparameter("step_size")(1), jax.Array)
    # Equal hyperparameters are equal and hash equal (checkpoints compare strategies).
    a, b = PersistentCD(MALA(0.1), energy_reg=0.1), PersistentCD(MALA(0.1), energy_reg=0.1)
    assert eqx.tree_equal(a, b) and hash(a) == hash(b)
    assert not eqx.tree_equal(a, PersistentCD(MALA(0.2), energy_reg=0.1))
    assert hash(MALA(0.1)) != hash(MALA(0.2))


# ---- item 18: float64 end to end -------------------------------------------------------

@pytest.mark.slow
def test_float64_end_to_end():
    # jax.enable_x64 is a context manager: x64 stays off for the rest of the suite.
    # On today's code CD with Langevin, sample from a float64 init and long_run failed with
    # scan-carry dtype mismatches, and data were cast to float32.
    with jax.enable_x64(True):
        key = jax.random.key(0)
        data = jax.random.normal(key, (256, 2), jnp.float64)
        model = eb.EBM(MLPEnergy(2, 8, 1, key=key))
        assert model.log_z.dtype == jnp.float64 and model.inverse_temperature.dtype == jnp.float64
        assert eb._checks.check_examples(data, "data", (2,)).dtype == jnp.float64
        assert eb.sample(model, MALA(0.05), num_steps=3, init=data[:8], key=key).dtype == jnp.float64
        assert eb.sample(model, Langevin(0.05), num_steps=3, num_samples=8, key=key).dtype == jnp.float64
        # float32 chains on a float64 model stay float32 (MALA's noise is float64 under x64)
        assert eb.sample(model, MALA(0.05), num_steps=3, init=data[:8].astype(jnp.float32), key=key).dtype == jnp.float32
        for strategy in (ContrastiveDivergence(Langevin(0.01), steps=2), PersistentCD(MALA(0.05), steps=2)):
            result = eb.fit(model, data, strategy, num_steps=2, batch_size=16, key=key, progress=False)
            dtypes = {leaf.dtype for leaf in jax.tree.leaves(result.model) if eqx.is_inexact_array(leaf)}
            assert dtypes == {jnp.dtype("float64")}, (type(strategy).__name__, dtypes)
        report = eb.evaluate.long_run(model, Langevin(0.01), data=data[:128], reference=data[128:], key=key,
                                      chain_lengths=(2,), num_chains=8)
        assert report.samples_from_noise.dtype == np.float64
        assert eb.evaluate.grid_log_z(model, bounds=(-20.0, 20.0), resolution=16).dtype == jnp.float64
    assert jnp.zeros(1).dtype == jnp.float32


def test_examples_keep_their_floating_dtype():
    x = eb._checks.check_examples(np.zeros((3, 2), np.float16), "data", None)
    assert x.dtype == jnp.float16
    with pytest.raises(TypeError, match="^data: expected a floating-point array, got dtype int"):
        eb._checks.check_examples(np.zeros((3, 2), np.int32), "data", None)


def test_type_change_names_the_leaf():
    from declebm._checks import type_change

    model = {"energy": {"a": jnp.array(-2.0), "b": jnp.ones(2)}}
    assert type_change(model, strong_dtypes(strong_dtypes(model))) == "['energy']['a'] changed from float32[] (weak) to float32[]"
    assert type_change(strong_dtypes(model), strong_dtypes(model)) is None
    assert "['energy']['b'] changed from float32[2] to float32[3]" == type_change(
        model, {"energy": {"a": model["energy"]["a"], "b": jnp.ones(3)}})


# ---- issue 19, item 11: float64 data beyond float32's range ------------------------------


def test_float64_data_beyond_float32s_range_are_refused_not_cast_to_inf():
    # Under JAX's default (x64 off) float64 data are cast to float32, whose largest finite
    # value is 3.4e38: 1e39 would become inf and surface later as a "divergence".
    data = np.ones((64, 2))
    data[3, 1] = 1e39
    data[5, 0] = -2e39
    message = r"float32's range \(largest finite 3\.4e\+38\).*rescale"
    with pytest.raises(ValueError, match=rf"^data: 2 values exceed {message}"):
        eb.fit(_MODEL, data, DenoisingScoreMatching(0.1), num_steps=2, batch_size=8, key=KEY, progress=False)
    with pytest.raises(ValueError, match=rf"^init: 2 values exceed {message}"):
        eb.sample(_MODEL, MALA(0.1), init=data, num_steps=1, key=KEY)
    with pytest.raises(ValueError, match=rf"^x: 2 values exceed {message}"):
        eb.evaluate.mmd(data, np.ones((64, 2)))
    with pytest.raises(ValueError, match=rf"^inverse_mass_matrix: 1 value exceeds {message}"):
        HMC(0.1, inverse_mass_matrix=np.array([1.0, 1e39]))
    with jax.enable_x64(True):  # float64 is kept: nothing is cast, nothing refused
        from declebm._checks import check_examples

        assert check_examples(data, "data", (2,)).dtype == jnp.float64
