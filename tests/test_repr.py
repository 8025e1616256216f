"""Strategies, samplers and estimators print the numbers of their hyperparameters."""

import jax
import jax.numpy as jnp

from declebm.inference import AIS, HMC, MALA, DenoisingScoreMatching, Langevin, PersistentCD, strategy_from_name


def test_sampler_repr_shows_its_step_size():
    # Equinox's default printed Langevin(step_size=weak_f32[]).
    assert repr(Langevin(0.1)) == "Langevin(step_size=0.1)"
    assert repr(Langevin(0.05, noise_scale=0.005)) == "Langevin(step_size=0.05, noise_scale=0.005)"
    assert repr(Langevin(jnp.array([0.1, 0.2, 0.3]))) == "Langevin(step_size=[0.1, 0.2, 0.3])"


def test_strategy_repr_shows_the_values_of_nested_hyperparameters():
    text = repr(PersistentCD(MALA(0.2), steps=5, energy_reg=0.01))
    assert "MALA(step_size=0.2)" in text and "energy_reg=0.01" in text and "steps=5" in text
    assert "weak_f32" not in text and "f32[]" not in text
    assert "sigmas=[0.1, 0.2]" in repr(DenoisingScoreMatching(sigmas=[0.1, 0.2]))
    assert "HMC(step_size=0.1, num_integration_steps=5)" in repr(strategy_from_name("pcd"))
    for name in ("cd", "pcd", "shortrun", "replay", "esm", "dsm", "ssm", "nce", "recovery", "particles"):
        assert "f32[]" not in repr(strategy_from_name(name)), name


def test_estimator_repr_and_large_or_traced_arrays_keep_a_summary():
    assert "step_size" not in repr(AIS(num_chains=64)) and repr(AIS(num_chains=64)) == "AIS(num_chains=64)"
    # a 100-entry mass matrix is summarised, not printed
    assert "f32[100]" in repr(HMC(0.1, inverse_mass_matrix=jnp.ones(100)))

    @jax.jit
    def inside(step):  # a traced hyperparameter cannot be read: its summary is printed
        inside.text = repr(Langevin(step))
        return step

    inside(jnp.asarray(0.3))
    assert inside.text.startswith("Langevin(step_size=") and "0.3" not in inside.text


def test_new_sampler_reprs_show_their_hyperparameters():
    from declebm.inference import GHMC, MCLMC, SVGD, AnnealedLangevin, Barker, ParallelTempering, UnderdampedLangevin

    assert repr(Barker(0.5)) == "Barker(step_size=0.5)"
    assert repr(GHMC(0.3)) == "GHMC(step_size=0.3, alpha=0.1, delta=0.1)"
    assert repr(UnderdampedLangevin(0.1, friction=2.0)) == "UnderdampedLangevin(step_size=0.1, friction=2)"
    assert repr(MCLMC(L=1.0, step_size=0.2)) == "MCLMC(L=1, step_size=0.2)"
    assert repr(SVGD(0.1)) == "SVGD(step_size=0.1)"
    assert "kernel=MALA(step_size=[0.1, 0.2]), temperatures=[1, 2]" in repr(
        ParallelTempering([MALA(0.1), MALA(0.2)], temperatures=[1.0, 2.0]))
    assert repr(AnnealedLangevin([1.0, 0.1], step_size=1e-3, steps_per_level=10)) == (
        "AnnealedLangevin(sigmas=[1, 0.1], step_size=0.001, steps_per_level=10)")
