"""Property-based fuzzing of the public API (issue 7, "Tests").

Every public entry point is called with one argument replaced by a malformed value
(wrong kind of object, NaN/inf, empty or oddly shaped arrays, huge or negative numbers,
wrong pytrees). The only acceptable outcomes are a normal return or a ``TypeError`` /
``ValueError`` whose message names the argument. A value of the wrong *kind* (a string
or a bool where a number goes, a float where an integer goes, ...) must not be accepted
silently. Example counts are bounded so the file runs in well under a minute.

The counts of one run (inputs tried, clear errors, normal returns) are printed at the
end of the session.
"""

from __future__ import annotations

import collections
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import declebm as eb
from declebm import inference as inf
from declebm import models

KEY = jax.random.key(0)
COUNTS: collections.Counter = collections.Counter()

# ---- what a malformed value can be -----------------------------------------------------

_DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_, np.complex64, np.uint8]
arrays = hnp.arrays(
    dtype=st.sampled_from(_DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
wrong_kind = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.just(object()),
    st.just(lambda x: x),
    st.just((1.0, "a")),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -1.0, 1e30, -1e-30, 1e-30, 2.0, 0.5]),
    st.integers(-3, 3),
    arrays.filter(lambda a: a.ndim == 0),
)
small_ints = st.one_of(st.integers(-3, 6), st.sampled_from([2.5, 3.0, np.int64(2)]))


def _number_ok(v, integer=False) -> bool:
    """Whether ``v`` is the right *kind* for a number argument (its value may be out of range)."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (np.ndarray, jax.Array)):
        if v.ndim != 0 or v.dtype == bool or np.issubdtype(v.dtype, np.complexfloating):
            return False
        return np.issubdtype(v.dtype, np.integer) if integer else np.issubdtype(v.dtype, np.number)
    if integer:
        return isinstance(v, (int, np.integer))
    return isinstance(v, (int, float, np.integer, np.floating))


def _array_ok(v) -> bool:
    if isinstance(v, (list, tuple)):  # array-like lists of numbers are fine
        return all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v)
    arr = v if isinstance(v, (np.ndarray, jax.Array)) else None
    return arr is not None and np.issubdtype(arr.dtype, np.floating)


def _key_ok(v) -> bool:
    return isinstance(v, jax.Array) and jnp.issubdtype(v.dtype, jax.dtypes.prng_key)


# kind -> (strategy of malformed values of that argument, "is it the right kind?")
KINDS = {
    "number": (st.one_of(floats, wrong_kind, arrays), _number_ok),
    "int": (st.one_of(small_ints, wrong_kind, arrays.filter(lambda a: a.ndim == 0)), lambda v: _number_ok(v, True)),
    "flag": (st.one_of(st.booleans(), wrong_kind, small_ints), lambda v: isinstance(v, (bool, np.bool_))),
    "array": (st.one_of(arrays, wrong_kind, floats), _array_ok),
    "key": (st.one_of(wrong_kind, arrays, st.just(jax.random.split(KEY, 2)), st.just(jax.random.PRNGKey(0))),
            lambda v: _key_ok(v) or (isinstance(v, jax.Array) and v.dtype == jnp.uint32 and v.shape == (2,))),
    "other": (st.one_of(wrong_kind, arrays, floats), lambda v: True),
}

# ---- the entry points, each with valid arguments and the arguments to break -----------

_G2 = eb.EBM(models.GaussianEnergy(jnp.zeros(2)))
_DATA = jax.random.normal(KEY, (32, 2))
_NPZ = os.path.join(tempfile.mkdtemp(prefix="declebm-fuzz-"), "data.npz")
np.savez(_NPZ, x=np.zeros((4, 2), np.float32))


def _shape_kind():
    return (st.one_of(st.tuples(st.integers(-2, 3)), st.tuples(), wrong_kind, arrays), lambda v: isinstance(v, tuple))


ENTRY_POINTS = {
    "EBM": (lambda **kw: eb.EBM(**kw), dict(energy=models.GaussianEnergy(jnp.zeros(2))),
            dict(energy="other", base="other", log_z="number", inverse_temperature="number", event_shape="shape")),
    "EBM.tempered": (lambda **kw: _G2.tempered(**kw), dict(temperature=2.0), dict(temperature="number")),
    "Langevin": (inf.Langevin, dict(step_size=0.1), dict(step_size="number", noise_scale="number")),
    "MALA": (inf.MALA, dict(step_size=0.1), dict(step_size="number")),
    "HMC": (inf.HMC, dict(step_size=0.1), dict(step_size="number", num_integration_steps="int",
                                               inverse_mass_matrix="array")),
    "NUTS": (inf.NUTS, dict(step_size=0.1), dict(step_size="number", max_num_doublings="int",
                                                 inverse_mass_matrix="array")),
    "ContrastiveDivergence": (inf.ContrastiveDivergence, dict(sampler=inf.Langevin(0.1)),
                              dict(sampler="other", steps="int", energy_reg="number", noise="other",
                                   kl_weight="number", kl_steps="int", entropy_weight="number", num_chains="int")),
    "PersistentCD": (inf.PersistentCD, dict(sampler=inf.MALA(0.1)), dict(steps="int", num_chains="int", energy_reg="number",
                                                                             adapt_step_size="flag",
                                                                             target_acceptance="number")),
    "ShortRunML": (inf.ShortRunML, dict(sampler=inf.Langevin(0.1)), dict(steps="int", kl_weight="number")),
    "ReplayBufferML": (inf.ReplayBufferML, dict(sampler=inf.Langevin(0.1)),
                       dict(buffer_size="int", reinit_prob="number", entropy_weight="number")),
    "MaximumLikelihood": (inf.MaximumLikelihood, dict(sampler=inf.Langevin(0.1)),
                          dict(init="other", steps="int", reinit_prob="number", buffer_size="int")),
    "ExactScoreMatching": (inf.ExactScoreMatching, {}, dict(hutchinson="flag", num_probes="int")),
    "SlicedScoreMatching": (inf.SlicedScoreMatching, {}, dict(num_projections="int", variance_reduction="flag",
                                                              projection="other")),
    "DenoisingScoreMatching": (inf.DenoisingScoreMatching, dict(sigma=0.1), dict(sigma="number", noise_arg="other")),
    "NCE": (inf.NCE, {}, dict(noise="other", ratio="number", init_log_z="flag", num_is_samples="int")),
    "strategy_from_name": (inf.strategy_from_name, dict(name="pcd"), dict(name="other")),
    "MLPEnergy": (models.MLPEnergy, dict(in_size=2, width=4, depth=1, key=KEY),
                  dict(in_size="int", width="int", depth="int", activation="other", key="key")),
    "NoiseConditionedMLPEnergy": (models.NoiseConditionedMLPEnergy, dict(in_size=2, width=4, depth=1, key=KEY),
                                  dict(in_size="int", depth="int", default_sigma="number", key="key")),
    "GaussianEnergy": (models.GaussianEnergy, dict(mean=np.zeros(2, np.float32)),
                       dict(mean="array", precision="array", covariance="array")),
    "datasets.toy": (eb.datasets.toy, dict(name="moons", n=8, key=KEY), dict(name="other", n="int", key="key")),
    "datasets.toy_log_prob": (eb.datasets.toy_log_prob, dict(name="8gaussians", x=np.zeros((3, 2), np.float32)),
                              dict(name="other", x="array")),
    "datasets.digits": (eb.datasets.digits, dict(key=KEY), dict(key="key", test_fraction="number", flatten="flag")),
    "datasets.load": (eb.datasets.load, dict(path=_NPZ), dict(path="other", name="other")),
    "evaluate.mmd": (eb.evaluate.mmd, dict(x=_DATA[:8], y=_DATA[8:16]), dict(x="array", y="array", bandwidth="number")),
    "evaluate.median_bandwidth": (eb.evaluate.median_bandwidth, dict(x=_DATA[:8]), dict(x="array", y="array")),
    "evaluate.nearest_neighbour_entropy": (eb.evaluate.nearest_neighbour_entropy, dict(x=_DATA[:8]), dict(x="array")),
    "evaluate.grid_log_z": (eb.evaluate.grid_log_z, dict(model=_G2, resolution=8),
                            dict(model="other", bounds="other", resolution="int")),
    "evaluate.grid_nll": (eb.evaluate.grid_nll, dict(model=_G2, data=_DATA, resolution=8),
                          dict(model="other", data="array", bounds="other", resolution="int")),
    "sample": (eb.sample, dict(model=_G2, sampler=inf.MALA(0.1), num_steps=2, num_samples=4, key=KEY),
               dict(model="other", sampler="other", num_steps="int", num_samples="int", key="key", init="array")),
    "fit": (eb.fit, dict(model=_G2, data=_DATA, strategy=inf.DenoisingScoreMatching(sigma=0.1), num_steps=2,
                         batch_size=4, key=KEY, progress=False),
            dict(model="other", data="array", strategy="other", num_steps="int", batch_size="int", key="key",
                 chunk_size="int", optimizer="other")),
    "evaluate.long_run": (eb.evaluate.long_run, dict(model=_G2, sampler=inf.Langevin(0.1), data=_DATA[:16],
                                                    reference=_DATA[16:], key=KEY, chain_lengths=(2,), num_chains=4),
                          dict(sampler="other", data="array", reference="array", chain_lengths="other",
                               num_chains="int", noise="other", bandwidth="number", drift_factor="number")),
}

# Entry points whose valid calls compile or run something get fewer examples.
_SLOW = {"sample": 12, "fit": 10, "evaluate.long_run": 8, "evaluate.grid_nll": 12, "evaluate.grid_log_z": 12,
         "datasets.digits": 10, "MLPEnergy": 12, "NoiseConditionedMLPEnergy": 12, "datasets.toy": 20,
         "evaluate.median_bandwidth": 20}


# Arguments for which None is a valid value (the default).
OPTIONAL = {"event_shape", "base", "noise_scale", "inverse_mass_matrix", "num_chains", "kl_steps", "noise", "precision",
            "covariance", "y", "bandwidth", "init", "num_samples", "chunk_size", "optimizer", "name", "bounds",
            "target_acceptance"}


def _names_argument(message: str, arg: str) -> bool:
    return arg in message


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = (f"fuzz: {COUNTS['tried']} inputs tried, {COUNTS['clear error']} clear errors naming the argument, "
            f"{COUNTS['returned']} normal returns, {COUNTS['other']} anything else")
    if reporter is not None:
        reporter.write_line(line)
    path = os.environ.get("DECLEBM_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            f.write(line + "\n")


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_malformed_argument_gets_a_clear_error(entry):
    fn, valid, args = ENTRY_POINTS[entry]

    @settings(max_examples=_SLOW.get(entry, 30), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        arg = data.draw(st.sampled_from(sorted(args)), label="argument")
        kind = args[arg]
        values, right_kind = _shape_kind() if kind == "shape" else KINDS[kind]
        value = data.draw(values, label=arg)
        COUNTS["tried"] += 1
        try:
            fn(**{**valid, arg: value})
        except (TypeError, ValueError) as e:
            if not _names_argument(str(e), arg):
                COUNTS["other"] += 1
                raise AssertionError(f"{entry}({arg}={value!r}): {type(e).__name__} does not name {arg!r}: {e}") from e
            COUNTS["clear error"] += 1
        except FileNotFoundError as e:  # a path that does not exist: the right error type
            assert arg == "path" and "path" in str(e)
            COUNTS["clear error"] += 1
        except Exception as e:
            COUNTS["other"] += 1
            raise AssertionError(f"{entry}({arg}={value!r}) raised {type(e).__name__}: {e}") from e
        else:
            if not right_kind(value) and not (value is None and arg in OPTIONAL):
                COUNTS["other"] += 1
                raise AssertionError(f"{entry}({arg}={value!r}): a {type(value).__name__} was accepted silently")
            COUNTS["returned"] += 1

    run()


def test_fit_optimizer_and_strategy_of_the_wrong_kind():
    # Not fuzzed above for speed: two fixed wrong pytrees.
    with pytest.raises(TypeError, match="optimizer"):
        eb.fit(_G2, _DATA, inf.DenoisingScoreMatching(sigma=0.1), num_steps=1, batch_size=4, key=KEY,
               optimizer=optax.adam, progress=False)
    with pytest.raises(TypeError, match="strategy"):
        eb.fit(_G2, _DATA, inf.MALA(0.1), num_steps=1, batch_size=4, key=KEY, progress=False)
