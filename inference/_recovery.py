r"""Diffusion recovery likelihood (Gao, Song, Poole, Wu, Kingma 2021; arXiv 2012.08125).

Instead of one EBM of the data, learn a ladder of *conditional* EBMs
``p(x_t | x_{t+1})`` over increasingly noised copies of the data. Each conditional is
tethered to ``x_{t+1}`` by a Gaussian, so it is close to unimodal and a short Langevin
chain started at ``x_{t+1}`` samples it well: maximum likelihood with short chains works
here where it fails for the marginal. The ladder (``inference/_recovery_schedule.py``) and
every constant follow the authors' public code (TensorFlow, T = 6). The ladder is
variance-preserving: it assumes data of about unit scale, and ``data_scale`` runs it on
``x / data_scale`` for data of another scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from declebm import EBM, AbstractStrategy
from declebm._checks import check_examples, check_key, check_positive
from declebm._ebm import check_energy, stop_gradient

from ._recovery_schedule import RecoverySchedule, check_level_sigmas, ddpm_level_sigmas, recovery_schedule
from ._samplers import Langevin

_Loss = tuple[Float[Array, ""], tuple[None, dict[str, Float[Array, ""]]]]


class RecoveryEnergy(eqx.Module):
    r"""The energy, in data space ``x``, of one level of a recovery-likelihood ladder:

    .. math:: E(x \mid x_{t+1}) = -\Bigl(f_\theta(a x / c, t) / s_t^2
              - \tau_t \|(a x - x_{t+1}) / c\|^2 / (2 \sigma_{t+1}^2)\Bigr)

    with ``f_theta(y, t) = model.log_prob_unnorm(y, **{noise_arg: sigma_{t+1}})``,
    ``a = a_{t+1}`` (1 at the top), ``tau_t`` 1 below the top and 0 there, and ``c`` the
    strategy's ``data_scale`` (``x`` and ``x_{t+1}`` in data units, ``y`` standardised). Called as
    ``energy(x, level=t, x_next=x_{t+1})``: with ``x_next`` it is the conditional
    ``p(x_t | x_{t+1})``; without it the marginal the ladder implies for level ``t``,
    ``p(x_t) ∝ exp(f(a x, t) / s_t^2)`` (``level`` defaults to ``default_level``). Wrap it
    in an ``EBM`` to sample or score it like any model
    (``DiffusionRecoveryLikelihood.level_model`` / ``conditional_model`` do).
    """

    model: EBM
    scale: Float[Array, " T"]
    label: Float[Array, " T"]
    step_size_sq: Float[Array, " T"]
    tether: Float[Array, " T"]
    tether_sigma: Float[Array, " T"]
    inv_data_scale: Float[Array, ""]
    noise_arg: str = eqx.field(static=True)
    default_level: int = eqx.field(static=True)

    @property
    def event_shape(self):
        return self.model.event_shape

    def __call__(
        self, x: Float[Array, "*event"], level: Int[Array, ""] | int | None = None, x_next: Array | None = None
    ) -> Float[Array, ""]:
        t = self.default_level if level is None else jnp.asarray(level).reshape(())
        y = self.scale[t] * x * self.inv_data_scale
        out = self.model.log_prob_unnorm(y, **{self.noise_arg: self.label[t]}) / self.step_size_sq[t]
        if x_next is not None:
            tether = jnp.sum((y - x_next * self.inv_data_scale) ** 2) / (2.0 * self.tether_sigma[t] ** 2)
            out = out - self.tether[t] * tether
        return -out


class DiffusionRecoveryLikelihood(AbstractStrategy):
    r"""Diffusion recovery likelihood (Gao et al. 2021): maximum likelihood of the
    conditionals ``p(x_t | x_{t+1})`` of a noise ladder, each sampled by a short Langevin
    chain started at ``x_{t+1}``.

    Per example: a level ``t ~ U{0..T-1}``; ``x_t = abar_t x_0 + sigmabar_t eps``;
    ``x_{t+1} = a_{t+1} x_t + sigma_{t+1} eps'``. In ``y = a_{t+1} x`` the conditional is

    .. math:: \log p(y \mid x_{t+1}) = f_\theta(y, t)/s_t^2 - \|y - x_{t+1}\|^2 / (2\sigma_{t+1}^2)

    (no tether at the top, ``t = T-1``; ``x`` here is the data divided by ``data_scale``,
    everything the strategy returns is in data units). Negatives: ``langevin_steps`` unadjusted Langevin
    steps ``y <- y + (s_t^2/2) grad_y log p + noise_scale * s_t z`` from ``y = x_{t+1}``,
    ``s_t^2 = b^2 (sigmabar_t / sigmabar_0) sigma_{t+1}^2``. Loss
    ``-(f(y+, t) - f(y-, t)) sigma_1 / sigma_{t+1}``, averaged. The chains run in ``x``
    with ``declebm.inference.Langevin`` (step ``s_t^2 / a_{t+1}^2``, noise
    ``noise_scale * s_t / a_{t+1}``: the same move), one step size per chain.

    The network ``f_theta(y, t) = -E(y, sigma=sigma_{t+1})``: the energy receives the noise
    level of the conditional it serves as the keyword ``noise_arg`` (``"sigma"``, as
    ``models.NoiseConditionedMLPEnergy`` takes it), so any level-conditioned energy works.

    After training: ``sample`` (progressive, from ``N(0, I)`` down the ladder),
    ``sample_conditional`` (long chains of one conditional), ``level_model(model, 0)`` (the
    level-0 density as an ``EBM``, for ``evaluate.grid_nll`` and AIS), ``conditional_model``
    (one conditional as an ``EBM`` taking ``level=`` and ``x_next=``).

    Arguments:
        num_levels: ``T``, the number of conditionals, for the default DDPM ladder
            (``ddpm_level_sigmas``: linear betas 1e-4..0.02 over 1000 steps).
        schedule: a custom ladder ``(sigma_0, ..., sigma_T)``, strictly increasing, in
            (0, 1] (``sigma_0`` the data level); overrides ``num_levels``.
        langevin_steps: ``K``, Langevin steps per training chain (30).
        step_size_constant: ``b^2`` (the code's 2e-4, for images in [-1, 1]).
        noise_scale: Langevin noise multiplier in training (1.0).
        sample_noise_scale: the same when sampling (0.99, as the code at test time).
        noise_arg: the keyword under which the energy receives the level.
        data_scale: ``c``, the scale of the data the ladder runs on: it models ``x / c``,
            so the ladder's noise is ``c sigma_t`` in data units and progressive sampling
            starts from ``N(0, c^2 I)``. The ladder is variance-preserving (``x_{t+1} =
            a x_t + sigma eps`` tends to ``N(0, I)``), so it assumes data of about unit
            per-axis standard deviation; pass the data's (e.g. ``float(data.std())``)
            when it is far from 1. 1.0 (the code's images in [-1, 1]) by default.

    Metrics: ``f_data``, ``f_samples`` (mean ``f`` of positives and negatives),
    ``displacement`` (mean ``||x- - x_{t+1}/a||``, in data units), and ``loss_level{t}`` (mean weighted
    loss of the batch's examples at level ``t``; 0 when none drew it).
    """

    sigmas: tuple[float, ...] = eqx.field(static=True)
    langevin_steps: int = eqx.field(static=True)
    step_size_constant: float = eqx.field(static=True)
    noise_scale: float = eqx.field(static=True)
    sample_noise_scale: float = eqx.field(static=True)
    noise_arg: str = eqx.field(static=True)
    data_scale: float = eqx.field(static=True)

    def __init__(
        self,
        num_levels: int = 6,
        *,
        schedule: Sequence[float] | None = None,
        langevin_steps: int = 30,
        step_size_constant: float = 2e-4,
        noise_scale: float = 1.0,
        sample_noise_scale: float = 0.99,
        noise_arg: str = "sigma",
        data_scale: float = 1.0,
    ):
        if schedule is None:
            self.sigmas = ddpm_level_sigmas(num_levels)
        else:
            self.sigmas = check_level_sigmas(schedule, "schedule")
        check_positive(langevin_steps, "langevin_steps", integer=True)
        check_positive(step_size_constant, "step_size_constant")
        check_positive(noise_scale, "noise_scale", allow_zero=True)
        check_positive(sample_noise_scale, "sample_noise_scale", allow_zero=True)
        check_positive(data_scale, "data_scale")
        if not isinstance(noise_arg, str) or not noise_arg.isidentifier():
            raise ValueError(f"noise_arg: expected a keyword name such as 'sigma', got {noise_arg!r}")
        self.langevin_steps = int(langevin_steps)
        self.step_size_constant = float(step_size_constant)
        self.noise_scale = float(noise_scale)
        self.sample_noise_scale = float(sample_noise_scale)
        self.noise_arg = noise_arg
        self.data_scale = float(data_scale)

    # ---- the ladder ---------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.sigmas) - 1

    @property
    def schedule(self) -> RecoverySchedule:
        """Every per-level constant (NumPy, float64): see ``RecoverySchedule``."""
        return recovery_schedule(self.sigmas, self.step_size_constant)

    def _energy(self, model: EBM, default_level: int = 0) -> RecoveryEnergy:
        s = self.schedule
        f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        return RecoveryEnergy(
            model=model,
            scale=f32(s.scale),
            label=f32(s.tether_sigma),
            step_size_sq=f32(s.step_size**2),
            tether=f32(s.tether),
            tether_sigma=f32(s.tether_sigma),
            inv_data_scale=f32(1.0 / self.data_scale),
            noise_arg=self.noise_arg,
            default_level=default_level,
        )

    def _check_level(self, level: Any) -> int:
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < self.num_levels:
            raise ValueError(f"level: expected an integer in 0..{self.num_levels - 1}, got {level!r}")
        return level

    def _check_model(self, model: Any, event_shape=None) -> EBM:
        if not isinstance(model, EBM):
            raise TypeError(f"model: expected a declebm.EBM, got {type(model).__name__}")
        shape = model.event_shape if event_shape is None else event_shape
        if shape is None:
            raise ValueError("model: its event_shape is unknown; declare it (EBM(..., event_shape=...))")
        try:
            check_energy(model, shape, **{self.noise_arg: jnp.ones((), jnp.float32)})
        except TypeError as e:
            raise TypeError(
                f"model: diffusion recovery likelihood needs a level-conditioned energy called as "
                f"E(x, {self.noise_arg}=...) (e.g. declebm.models.NoiseConditionedMLPEnergy); "
                f"calling it that way failed: {e}"
            ) from e
        return model if model.event_shape is not None else model.with_event_shape(shape)

    def level_model(self, model: EBM, level: int = 0) -> EBM:
        r"""The marginal density the ladder implies for level ``t``,
        ``log p~(x) = f(a_{t+1} x / c, t) / s_t^2`` (``c = data_scale``), as an ``EBM`` of ``x`` (for ``level=0``:
        the data with noise ``sigma_0``). Score it with ``evaluate.grid_nll`` or AIS."""
        return self.watched_model(self._check_model(model), self._check_level(level))

    def conditional_model(self, model: EBM) -> EBM:
        """The conditionals as one ``EBM`` called with ``level=t`` and ``x_next=x_{t+1}``
        (``RecoveryEnergy``); e.g. ``evaluate.long_run(..., condition={...})``."""
        model = self._check_model(model)
        return EBM(self._energy(model), event_shape=model.event_shape)

    def sampler(self, level: Int[Array, " chains"], noise_scale: float) -> Langevin:
        r"""The Langevin sampler of conditional ``level[i]`` for chain ``i``, in ``x``:
        step ``(c s_t / a_{t+1})^2`` and noise ``noise_scale * c s_t / a_{t+1}`` (the ``y``-space
        move ``y <- y + (s_t^2/2) grad_y + noise_scale s_t z`` written in ``x = c y / a``,
        ``c = data_scale``)."""
        s = self.schedule
        per_level = jnp.asarray(self.data_scale * s.step_size / s.scale, jnp.float32)[level]
        return Langevin(step_size=per_level**2, noise_scale=noise_scale * per_level)

    def _recover(self, model: EBM, x_next, level, num_steps: int, noise_scale: float, key, init=None):
        """Chains of ``p(x_t | x_{t+1})``, one per row of ``x_next`` (level per chain), from
        ``x_{t+1} / a_{t+1}`` (Gao et al.'s start) or ``init``."""
        cond = EBM(self._energy(model), event_shape=model.event_shape)
        scale = jnp.asarray(self.schedule.scale, x_next.dtype)[level]
        start = x_next / scale.reshape((-1,) + (1,) * (x_next.ndim - 1)) if init is None else init
        return self.sampler(level, noise_scale).run(cond, start, num_steps, key, level=level, x_next=x_next)

    # ---- the strategy contract ------------------------------------------------------------
    def watched_model(self, model: EBM, level: int = 0) -> EBM:
        """What ``fit``'s divergence guard watches: the level-0 density (``level_model``
        without its argument checks), not the energy at its ``default_sigma``, which may be a
        level the ladder never trains (extrapolated, it can grow without anything being wrong)."""
        return EBM(self._energy(model, level), event_shape=model.event_shape)

    def init(self, model: EBM, data: Float[Array, "n *event"], key: PRNGKeyArray, *, batch_size: int | None = None):
        self._check_model(model, data.shape[1:])
        if not isinstance(data, jax.core.Tracer):
            # The ladder is variance-preserving: it noises x / data_scale toward N(0, I), so data
            # far beyond data_scale (raw 0..255 pixels) would never be noised to the top level.
            # Their root mean square, not the largest value: whitened data have rare large values.
            rms = float(jnp.sqrt(jnp.mean(jnp.square(data))))
            if rms > 10.0 * self.data_scale:
                raise ValueError(
                    f"data: diffusion recovery likelihood's ladder is variance-preserving and expects data of "
                    f"scale data_scale={self.data_scale:g} (images in [-1, 1]: datasets.to_symmetric_range), got "
                    f"a root mean square of {rms:.4g}; rescale the data or set data_scale to their scale"
                )
        return None

    def loss(self, model: EBM, batch: Float[Array, "batch *event"], state: None, key: PRNGKeyArray) -> _Loss:
        s = self.schedule
        n = batch.shape[0]
        col = (n,) + (1,) * (batch.ndim - 1)
        k_level, k_t, k_next, k_chain = jax.random.split(key, 4)
        f32 = lambda v: jnp.asarray(v, batch.dtype)  # noqa: E731
        level = jax.random.randint(k_level, (n,), 0, self.num_levels)
        # x_t = abar_t x_0 + c sigmabar_t eps; x_{t+1} = a_{t+1} x_t + c sigma_{t+1} eps' (c = data_scale)
        c = self.data_scale
        x_t = f32(s.abar)[level].reshape(col) * batch + f32(c * s.sigmabar)[level].reshape(col) * jax.random.normal(
            k_t, batch.shape, batch.dtype
        )
        x_next = f32(s.a)[level + 1].reshape(col) * x_t + f32(c * s.sigma)[level + 1].reshape(
            col
        ) * jax.random.normal(k_next, batch.shape, batch.dtype)
        frozen = stop_gradient(model)
        x_neg, _ = self._recover(frozen, x_next, level, self.langevin_steps, self.noise_scale, k_chain)
        x_neg = jax.lax.stop_gradient(x_neg)

        scale = f32(s.scale)[level].reshape(col)
        y_scale = scale / c  # y = a_{t+1} x / c
        label = {self.noise_arg: f32(s.tether_sigma)[level]}
        f_pos = model.log_prob_unnorm_batch(y_scale * x_t, **label)
        f_neg = model.log_prob_unnorm_batch(y_scale * x_neg, **label)
        per_example = -(f_pos - f_neg) * f32(s.weight)[level]
        metrics = {
            "f_data": jnp.mean(f_pos),
            "f_samples": jnp.mean(f_neg),
            "displacement": jnp.mean(
                jnp.sqrt(jnp.sum(((x_neg - x_next / scale) ** 2).reshape(n, -1), axis=1))
            ),
        }
        onehot = jax.nn.one_hot(level, self.num_levels, dtype=batch.dtype)
        counts = jnp.sum(onehot, 0)
        per_level = jnp.sum(onehot * jax.lax.stop_gradient(per_example)[:, None], 0) / jnp.maximum(counts, 1.0)
        for t in range(self.num_levels):
            metrics[f"loss_level{t}"] = per_level[t]
        return jnp.mean(per_example), (state, metrics)

    # ---- sampling -------------------------------------------------------------------------
    def sample(
        self,
        model: EBM,
        num_samples: int,
        *,
        key: PRNGKeyArray,
        num_steps: int | None = None,
        noise_scale: float | None = None,
        all_levels: bool = False,
    ) -> Float[Array, "..."]:
        r"""Progressive sampling (Gao et al., Algorithm 2): ``x_T ~ N(0, c^2 I)`` (``c =
        data_scale``), then for
        ``t = T-1 .. 0`` a Langevin chain of ``p(x_t | x_{t+1})`` from ``x_{t+1}/a_{t+1}``.

        Arguments:
            model: the trained (level-conditioned) ``EBM``.
            num_samples: number of chains.
            key: a ``jax.random.key``.
            num_steps: Langevin steps per level (default ``langevin_steps``).
            noise_scale: Langevin noise multiplier (default ``sample_noise_scale``, 0.99).
            all_levels: return every level, shape ``(T + 1, n, *event)`` with index ``t``
                holding ``x_t`` (index ``T`` the Gaussian start), instead of ``x_0`` alone.
        """
        model = self._check_model(model)
        check_positive(num_samples, "num_samples", integer=True)
        check_key(key)
        num_steps = self.langevin_steps if num_steps is None else num_steps
        check_positive(num_steps, "num_steps", integer=True)
        noise_scale = self.sample_noise_scale if noise_scale is None else noise_scale
        check_positive(noise_scale, "noise_scale", allow_zero=True)
        xs = _progressive(self, model, num_samples, int(num_steps), jnp.float32(noise_scale), key)
        return xs if all_levels else xs[0]

    def sample_conditional(
        self,
        model: EBM,
        x_next: Float[Array, "n *event"],
        level: int = 0,
        *,
        key: PRNGKeyArray,
        num_steps: int | None = None,
        noise_scale: float | None = None,
        init: Float[Array, "n *event"] | None = None,
    ) -> Float[Array, "n *event"]:
        r"""``num_steps`` Langevin steps of ``p(x_level | x_{level+1} = x_next)``, one chain
        per row of ``x_next``, from ``x_next / a_{level+1}`` (or ``init``); e.g. 100 times
        the training length to check that long-run conditional chains stay on the data."""
        model = self._check_model(model)
        level = self._check_level(level)
        x_next = check_examples(x_next, "x_next", model.event_shape)
        if init is not None:
            init = check_examples(init, "init", model.event_shape)
            if init.shape != x_next.shape:
                raise ValueError(f"init: expected shape {x_next.shape} like x_next, got {init.shape}")
        check_key(key)
        num_steps = self.langevin_steps if num_steps is None else num_steps
        check_positive(num_steps, "num_steps", integer=True)
        noise_scale = self.sample_noise_scale if noise_scale is None else noise_scale
        check_positive(noise_scale, "noise_scale", allow_zero=True)
        return _conditional(self, model, x_next, level, int(num_steps), jnp.float32(noise_scale), key, init)


@eqx.filter_jit
def _conditional(strategy, model, x_next, level, num_steps, noise_scale, key, init):
    levels = jnp.full((x_next.shape[0],), level, jnp.int32)
    x, _ = strategy._recover(model, x_next, levels, num_steps, noise_scale, key, init)
    return x


@eqx.filter_jit
def _progressive(strategy: DiffusionRecoveryLikelihood, model: EBM, n: int, num_steps: int, noise_scale, key):
    k_start, k_levels = jax.random.split(key)
    x_top = strategy.data_scale * jax.random.normal(k_start, (n,) + tuple(model.event_shape))

    def down(x_next, inp):
        t, k = inp
        x, _ = strategy._recover(model, x_next, jnp.full((n,), t, jnp.int32), num_steps, noise_scale, k)
        return x, x

    levels = jnp.arange(strategy.num_levels - 1, -1, -1, dtype=jnp.int32)
    _, xs = jax.lax.scan(down, x_top, (levels, jax.random.split(k_levels, strategy.num_levels)))
    return jnp.concatenate([xs[::-1], x_top[None]])
