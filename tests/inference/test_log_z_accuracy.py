"""Default AIS() and SMC(): accuracy on correlated Gaussians and an unequal mixture, error
bars that cover the truth, and no quiet wrong numbers (NaN, +inf constraints, densities
that do not integrate)."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import declebm as eb
from declebm.inference import AIS, SMC

# SMC's runs are the longest of these (15-30 s each on two cores): in the full suite only
SLOW = pytest.mark.slow


class _Quadratic(eqx.Module):
    """A user-declared energy ``(x - m)^T P (x - m) / 2 + c``."""

    mean: jax.Array
    precision: jax.Array
    offset: float = eqx.field(static=True)

    def __call__(self, x):
        d = x - self.mean
        return 0.5 * d @ self.precision @ d + self.offset


def correlated_gaussian(dim, *, low=0.1, high=500.0, seed=0, offset=3.0):
    """Covariance eigenvalues log-spaced in [low, high] in a random basis, a shifted mean and
    an energy offset; returns the model and its exact log Z."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    ev = np.geomspace(low, high, dim)
    precision = (q / ev) @ q.T
    energy = _Quadratic(jnp.asarray(2.0 * rng.normal(size=dim), jnp.float32),
                        jnp.asarray(0.5 * (precision + precision.T), jnp.float32), offset)
    return eb.EBM(energy, event_shape=(dim,)), 0.5 * dim * np.log(2 * np.pi) + 0.5 * np.sum(np.log(ev)) - offset


class _TwoModes(eqx.Module):
    def __call__(self, x):
        a = jnp.log(0.3) - 0.5 * jnp.sum((x - 2.0) ** 2)
        b = jnp.log(0.7) - 0.5 * jnp.sum((x + 2.0) ** 2)
        return -jnp.logaddexp(a, b)


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn()


@pytest.mark.parametrize("estimator", [pytest.param(AIS(), id="AIS"), pytest.param(SMC(), id="SMC", marks=SLOW)])
@pytest.mark.slow
def test_defaults_are_accurate_on_a_10d_correlated_gaussian_and_an_unequal_mixture(estimator):
    # Condition number 5000 (eigenvalues 0.1..500), the start a standard normal: the
    # estimators' pilot run fits the start. Measured over seeds 0-1 (benchmarks/
    # RESULTS_log_z.md has the full table): errors at most 0.02 (AIS) and 0.04 (SMC).
    model, truth = correlated_gaussian(10)
    est = eb.evaluate.log_z(model, estimator, key=jax.random.key(0))
    assert abs(float(est.log_z) - truth) < 0.1 and est.reliable
    mix = eb.EBM(_TwoModes(), event_shape=(10,))
    est = eb.evaluate.log_z(mix, estimator, key=jax.random.key(0))
    assert abs(float(est.log_z) - 5 * np.log(2 * np.pi)) < 0.1 and est.reliable


@pytest.mark.slow
def test_the_stderr_covers_the_truth_over_keys():
    # 24 keys on a 5-D correlated Gaussian (condition number 500), small AIS runs: the 95%
    # interval log_z +- 1.96 stderr must hold the truth. With a true coverage of 95% the
    # count is Binomial(24, 0.95): P(count <= 20) = 0.03, so at least 21 of 24 is asked.
    model, truth = correlated_gaussian(5, low=0.1, high=50.0, seed=1)
    ais = AIS(num_chains=256, num_steps=100)
    errors, stderrs = [], []
    for seed in range(24):
        est = _quiet(lambda: eb.evaluate.log_z(model, ais, key=jax.random.key(seed)))
        errors.append(float(est.log_z) - truth)
        stderrs.append(float(est.stderr))
    covered = np.abs(errors) <= 1.96 * np.asarray(stderrs)
    assert covered.sum() >= 21, (np.round(errors, 4).tolist(), np.round(stderrs, 4).tolist())
    # and the bars are not vacuous: the typical error bar is within 5x the typical error
    assert np.median(stderrs) < 5 * np.median(np.abs(errors)) + 1e-3


def _covered(make_estimate, truth, num_keys=24):
    """How many of ``num_keys`` seeded runs have the truth inside ``log_z +- 1.96 stderr``;
    with the errors and stderrs for the failure message."""
    errors, stderrs = [], []
    for seed in range(num_keys):
        est = _quiet(lambda: make_estimate(jax.random.key(seed)))
        errors.append(float(est.log_z) - truth)
        stderrs.append(float(est.stderr))
    covered = int(np.sum(np.abs(errors) <= 1.96 * np.asarray(stderrs)))
    return covered, (np.round(errors, 4).tolist(), np.round(stderrs, 4).tolist())


@SLOW
def test_smc_stderr_covers_the_truth_over_keys():
    # The same 5-D target and the same binomial bound as AIS's test above (at least 21 of 24,
    # P = 0.03 of failing at a true 95%): SMC's stderr is the t-widened spread of its runs.
    model, truth = correlated_gaussian(5, low=0.1, high=50.0, seed=1)
    smc = SMC(num_particles=128, num_runs=8, num_mcmc_steps=5)
    covered, detail = _covered(lambda k: eb.evaluate.log_z(model, smc, key=k), truth)
    assert covered >= 21, detail


class _Unequal(eqx.Module):
    """Two unit Gaussians 4 apart along every axis of 3-D, weights 0.3 / 0.7: log Z = (3/2) log 2 pi."""

    def __call__(self, x):
        return -jnp.logaddexp(jnp.log(0.3) - 0.5 * jnp.sum((x - 2.0) ** 2), jnp.log(0.7) - 0.5 * jnp.sum((x + 2.0) ** 2))


@pytest.mark.slow
def test_ais_stderr_covers_the_truth_on_an_unequal_mixture_over_keys():
    # The modes are 6.9 apart (4 sqrt 3): a chain cannot cross between them at these
    # temperatures, so the weights alone must carry the 0.3/0.7 split; at least 21 of 24.
    model = eb.EBM(_Unequal(), event_shape=(3,))
    ais = AIS(num_chains=256, num_steps=100)
    covered, detail = _covered(lambda k: eb.evaluate.log_z(model, ais, key=k), 1.5 * np.log(2 * np.pi))
    assert covered >= 21, detail


@pytest.mark.slow
def test_the_bdmc_bracket_holds_the_truth_over_keys():
    # Bidirectional Monte Carlo with exact draws (Grosse et al. 2015): forward AIS is a
    # stochastic lower bound and reverse AIS from exact samples an upper one, so
    # [log_z_lower - 1.96 stderr, log_z_upper + 1.96 reverse stderr] must hold the truth in
    # at least 21 of 24 keys (the same binomial bound), on the 5-D correlated Gaussian.
    from declebm.models import GaussianEnergy

    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    cov = (q * np.geomspace(0.1, 50.0, 5)) @ q.T
    energy = GaussianEnergy(jnp.asarray(2.0 * rng.normal(size=5), jnp.float32),
                            covariance=jnp.asarray(0.5 * (cov + cov.T), jnp.float32))
    model, truth = eb.EBM(energy, event_shape=(5,)), float(energy.log_z)
    ais = AIS(num_chains=256, num_steps=100, reverse="exact")
    held, gaps = 0, []
    for seed in range(24):
        est = _quiet(lambda: eb.evaluate.log_z(model, ais, key=jax.random.key(seed)))
        low = float(est.log_z_lower) - 1.96 * float(est.stderr)
        high = float(est.log_z_upper) + 1.96 * float(est.diagnostics["reverse_stderr"])
        held += low <= truth <= high
        gaps.append(round(float(est.gap), 4))
    assert held >= 21, (held, gaps)
    # and the bracket is informative: its median width is under a nat
    assert np.median(gaps) < 1.0, gaps


class _HalfPlane(eqx.Module):
    """+inf energy (zero density) for x0 < 0: a valid hard constraint; log Z = log pi."""

    def __call__(self, x):
        return jnp.where(x[0] < 0, jnp.inf, 0.5 * jnp.sum(x**2))


class _HalfNaN(eqx.Module):
    def __call__(self, x):
        return jnp.where(x[0] < 0, jnp.nan, 0.5 * jnp.sum(x**2))


class _Unbounded(eqx.Module):
    """E = -|x|^2 / 2: exp(-E) does not integrate."""

    def __call__(self, x):
        return -0.5 * jnp.sum(x**2)


class _Linear(eqx.Module):
    def __call__(self, x):
        return -jnp.sum(x)


@pytest.mark.parametrize("estimator", [pytest.param(AIS(num_chains=256, num_steps=200), id="AIS"),
                                       pytest.param(SMC(num_particles=256, num_runs=4), id="SMC", marks=SLOW)])
@pytest.mark.slow
def test_never_a_quiet_wrong_number(estimator):
    key = jax.random.key(0)
    # +inf is a constraint: chains are rejected there, the estimate is finite and right
    est = eb.evaluate.log_z(eb.EBM(_HalfPlane(), event_shape=(2,)), estimator, key=key)
    assert abs(float(est.log_z) - np.log(np.pi)) < 4 * float(est.stderr) + 0.02
    # NaN is an error naming the model
    with pytest.raises(ValueError, match=r"^model: its energy is NaN"):
        eb.evaluate.log_z(eb.EBM(_HalfNaN(), event_shape=(2,)), estimator, key=key)
    # densities that do not integrate: flagged, with a warning
    for energy in (_Unbounded(), _Linear()):
        with pytest.warns(RuntimeWarning, match=type(estimator).__name__):
            est = eb.evaluate.log_z(eb.EBM(energy, event_shape=(2,)), estimator, key=key)
        assert est.reliable is False and est.warnings
    # a short repr
    assert len(repr(est).splitlines()) == 1 and len(repr(est)) < 200 and "reliable=False" in repr(est)


def test_log_likelihood_reports_the_estimates_reliability_and_prints_short():
    model, _ = correlated_gaussian(3, low=0.5, high=5.0)
    data = jax.random.normal(jax.random.key(1), (50, 3))
    ll = eb.evaluate.log_likelihood(model, data, AIS(num_chains=64, num_steps=50), key=jax.random.key(0))
    assert ll.reliable is ll.log_z.reliable and ll.reliable is not None and ll.warnings == ll.log_z.warnings
    assert len(repr(ll).splitlines()) == 1 and "reliable=" in repr(ll) and "n=50" in repr(ll)


class _Flat(eqx.Module):
    """E = 0: the estimate only measures the start's width (flat SMC and AIS used to pass)."""

    def __call__(self, x):
        return 0.0 * jnp.sum(x)


class _Cauchy(eqx.Module):
    """A 2-D multivariate Cauchy, ``p~ = (1 + |x|^2)^{-3/2}``: heavy tails, integrable
    (log Z = log 2 pi)."""

    def __call__(self, x):
        return 1.5 * jnp.log1p(jnp.sum(x**2))


@pytest.mark.parametrize("estimator", [pytest.param(AIS(num_chains=256, num_steps=200), id="AIS"),
                                       pytest.param(SMC(num_particles=256, num_runs=4), id="SMC", marks=SLOW)])
@pytest.mark.slow
def test_a_density_that_does_not_fall_off_is_flagged_and_heavy_tails_are_not(estimator):
    from declebm.inference._annealing import integrability_checks

    key = jax.random.key(0)
    with pytest.warns(RuntimeWarning, match="does not fall off"):
        est = eb.evaluate.log_z(eb.EBM(_Flat(), event_shape=(2,)), estimator, key=key)
    assert est.reliable is False and any("does not fall off" in w for w in est.warnings)
    # the check itself, on draws: fails for flat, passes for the Cauchy, the half-plane
    # constraint and a Gaussian (each energy checked at 512 standard-normal points)
    x = jax.random.normal(key, (512, 2))
    flags = {name: integrability_checks(eb.EBM(e, event_shape=(2,)), x, x)[1][0]
             for name, e in [("flat", _Flat()), ("cauchy", _Cauchy()), ("half-plane", _HalfPlane()),
                             ("linear", _Linear())]}
    assert flags == {"flat": True, "cauchy": False, "half-plane": False, "linear": True}, flags
    # and the estimators do not flag the Cauchy on that account
    est = _quiet(lambda: eb.evaluate.log_z(eb.EBM(_Cauchy(), event_shape=(2,)), estimator, key=key))
    assert not any("does not fall off" in w or "ran away" in w for w in est.warnings), est.warnings


def test_a_replicate_with_no_finite_weight_is_flagged():
    # Half the plane is forbidden (+inf energy) and the start is N(0, I), so each chain
    # starts there (weight 0) with probability 1/2, and a replicate of 2 chains has no
    # finite weight (log Z_r = -inf) with probability 1/4. Its log Z disagrees with the
    # others by an unbounded amount; the sd over all replicates is then NaN, which passed
    # the disagreement check silently (the digits recovery row: "reliable", stderr 310).
    import numpyro.distributions as dist

    start = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    ais = AIS(num_chains=16, num_replicates=8, num_steps=20, base=start)
    est = _quiet(lambda: eb.evaluate.log_z(eb.EBM(_HalfPlane(), event_shape=(2,)), ais, key=jax.random.key(0)))
    dead = int(np.sum(~np.isfinite(np.asarray(est.diagnostics["replicate_log_z"]))))
    # P(no dead replicate among 8) = (3/4)^8 = 0.10; this key has some (asserted)
    assert 0 < dead < 8, dead
    said = [w for w in est.warnings if "have log Z = -inf or NaN" in w]
    assert est.reliable is False and said and said[0].startswith(f"{dead} of the 8 replicates"), est.warnings
    assert np.isfinite(float(est.log_z)) and np.isfinite(float(est.stderr))


def test_replicate_spread_ignores_and_counts_dead_replicates():
    from declebm._estimator import replicate_spread

    assert replicate_spread(jnp.asarray([1.0, 3.0, -jnp.inf, jnp.nan])) == (pytest.approx(np.sqrt(2.0)), 2)
    assert replicate_spread(jnp.asarray([2.0])) == (0.0, 0)
