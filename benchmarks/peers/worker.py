"""One training run of one library on the 8-Gaussians protocol, in its own process; writes
a JSON record (timings, peak memory, grid NLL). Started by ``run.py``; PyTorch is imported
only by the PyTorch libraries.

    python benchmarks/peers/worker.py --library declebm --method pcd --data out/data_seed0.npz \
        --seed 0 --iterations 2000 --out out/run.json
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # process start, before any heavy import: wall times count from here

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # common.py (scripts run with PYTHONSAFEPATH get no script folder on sys.path)
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/bench_fit.py (the hand-written JAX loop)

import common  # noqa: E402

BATCH, LR = 256, 1e-3
CHAINS, LANGEVIN_STEPS, ULA_STEP, REINIT, ENERGY_REG = 256, 20, 0.01, 0.05, 0.001  # x <- x - 0.01 grad E + sqrt(0.02) z
DSM_SIGMA = 0.1

# What each library offers under this protocol (run.py writes "—, not in ..." for the rest).
METHODS = {
    "declebm": ("dsm", "pcd", "ssm", "esm", "nce"),
    "jax-scan": ("pcd",),
    "ebmkit": ("dsm", "pcd", "ssm", "esm", "nce"),
    "torchebm": ("dsm", "pcd", "ssm", "esm"),
    "torch": ("dsm", "pcd"),
}
# The configuration each library recommends (its README / defaults), for the time-budget table.
RECOMMENDED = ("dsm", "pcd")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", required=True, choices=sorted(METHODS))
    ap.add_argument("--method", required=True, choices=("dsm", "pcd", "ssm", "esm", "nce"))
    ap.add_argument("--data", required=True, help=".npz with arrays train and test (written by run.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--budget", type=float, default=None,
                    help="train until this many seconds after process start (then --iterations is ignored)")
    ap.add_argument("--config", choices=("protocol", "recommended"), default="protocol")
    ap.add_argument("--chunk", type=int, default=100, help="iterations per timed chunk")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", required=True, help="JSON record to write")
    return ap


def _out_of_time(a) -> bool:
    return a.budget is not None and time.perf_counter() - T0 >= a.budget




# ---------------------------------------------------------------- declebm (fit) --------
def run_declebm(a, train, test, grid):
    import equinox as eqx
    import jax
    import optax

    import declebm as eb
    from declebm import inference as inf
    from declebm.models import MLPEnergy

    t_import = time.perf_counter() - T0
    key = jax.random.key(a.seed)
    model = eb.EBM(MLPEnergy(2, 128, 2, key=key))
    notes = []
    if a.config == "recommended":
        strategy = inf.strategy_from_name(a.method)
        notes.append(f"strategy_from_name({a.method!r}) = {type(strategy).__name__}")
    elif a.method == "dsm":
        strategy = inf.DenoisingScoreMatching(sigma=DSM_SIGMA)
    elif a.method == "pcd":
        # declebm's step convention: x + eps/2 * score + sqrt(eps) z, so eps = 2 * 0.01 = 0.02.
        # PersistentCD has no re-initialisation; the buffer start with a buffer of exactly
        # 256 chains, each drawn chain restarted from noise with probability 5%, is the protocol.
        strategy = inf.MaximumLikelihood(
            inf.Langevin(step_size=2 * ULA_STEP), steps=LANGEVIN_STEPS, init="buffer", buffer_size=CHAINS,
            num_chains=CHAINS, reinit_prob=REINIT, energy_reg=ENERGY_REG)
        notes.append("MaximumLikelihood(init='buffer', buffer_size=256, num_chains=256, reinit_prob=0.05); "
                     "noise = Gaussian fitted to the data")
    elif a.method == "ssm":
        strategy = inf.SlicedScoreMatching(num_projections=1)
    elif a.method == "esm":
        strategy = inf.ExactScoreMatching()
    else:
        strategy = inf.NCE()
    callbacks = [lambda step, metrics, m: _out_of_time(a)] if a.budget is not None else []
    num_steps = 10**9 if a.budget is not None else a.iterations
    diverged = False
    t_fit = time.perf_counter()
    try:
        res = eb.fit(model, train, strategy, num_steps=num_steps, batch_size=BATCH, key=key,
                     optimizer=optax.adam(LR), chunk_size=a.chunk, progress=False, callbacks=callbacks)
        trained, steps = res.model, res.step
        times = np.diff(np.concatenate([[0.0], res.history["time"]])).tolist()
        chunk_steps = np.diff(np.concatenate([[0], res.history["step"]])).astype(int).tolist()
    except eb.TrainingDivergedError as err:
        diverged, trained, steps, times, chunk_steps = True, err.model, -1, [], []
        notes.append(f"TrainingDivergedError: {err}"[:300])
    t_end = time.perf_counter()
    logp = eqx.filter_jit(lambda m, x: m.log_prob_unnorm_batch(x))
    logp_grid = np.asarray(logp(trained, jax.numpy.asarray(grid)))
    logp_test = np.asarray(logp(trained, jax.numpy.asarray(test)))
    api_nll = float(eb.evaluate.grid_nll(trained, test, bounds=common.BOUNDS, resolution=common.RESOLUTION))
    return dict(t_import=t_import, t_setup=t_fit - T0, t_end=t_end, steps=steps, chunk_times=times,
                chunk_steps=chunk_steps, logp_grid=logp_grid, logp_test=logp_test, notes=notes,
                diverged=diverged, nll_declebm_grid_nll=api_nll,
                timing="fit history: per-chunk wall time / steps")


# ------------------------------------------------------ hand-written jit + lax.scan --------
def run_jax_scan(a, train, test, grid):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import bench_fit
    from declebm.models import MLPEnergy

    t_import = time.perf_counter() - T0
    key = jax.random.key(a.seed)
    mlp = MLPEnergy(2, 128, 2, key=key).mlp
    run, carry, static = bench_fit.handwritten_loop(jnp.asarray(train), mlp, key, a.chunk, eps=2 * ULA_STEP,
                                                    steps_per_update=LANGEVIN_STEPS, batch=BATCH, chains=CHAINS,
                                                    energy_reg=ENERGY_REG)
    t_setup = time.perf_counter() - T0
    times, chunk_steps, done = [], [], 0
    while (done < a.iterations) if a.budget is None else not _out_of_time(a):
        t = time.perf_counter()
        carry, _ = run(carry, done)
        jax.block_until_ready(carry)
        times.append(time.perf_counter() - t)
        chunk_steps.append(a.chunk)
        done += a.chunk
    t_end = time.perf_counter()
    energy = jax.jit(jax.vmap(eqx.combine(carry[0], static)))
    return dict(t_import=t_import, t_setup=t_setup, t_end=t_end, steps=done, chunk_times=times,
                chunk_steps=chunk_steps, logp_grid=-np.asarray(energy(jnp.asarray(grid))),
                logp_test=-np.asarray(energy(jnp.asarray(test))), diverged=False,
                notes=["benchmarks/bench_fit.handwritten_loop: 256 persistent chains, no re-initialisation"],
                timing="per-chunk wall time / steps (block_until_ready)")


# ------------------------------------------------------------------- PyTorch peers --------
def _torch_mlp(torch):
    return torch.nn.Sequential(torch.nn.Linear(2, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                               torch.nn.SiLU(), torch.nn.Linear(128, 1))


def _torch_loop(a, torch, step_fn, t_import, t_setup):
    """Call ``step_fn(n)`` (n iterations) chunk by chunk until done or out of time."""
    times, chunk_steps, done = [], [], 0
    while (done < a.iterations) if a.budget is None else not _out_of_time(a):
        n = a.chunk if a.budget is not None else min(a.chunk, a.iterations - done)
        t = time.perf_counter()
        step_fn(n)
        times.append(time.perf_counter() - t)
        chunk_steps.append(n)
        done += n
    return dict(t_import=t_import, t_setup=t_setup, t_end=time.perf_counter(), steps=done, chunk_times=times,
                chunk_steps=chunk_steps, timing="per-chunk wall time / steps")


def _torch_eval(torch, energy, x):
    with torch.no_grad():
        out = [energy(torch.from_numpy(np.ascontiguousarray(c))).reshape(-1) for c in np.array_split(x, 10)]
    return -torch.cat(out).double().numpy()


def run_ebmkit(a, train, test, grid):
    import torch

    import ebm

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_import = time.perf_counter() - T0
    energy = ebm.nets.MLPEnergy(dim=2, hidden=(128, 128))  # Linear-SiLU-Linear-SiLU-Linear, (B,) out
    notes = []
    if a.config == "recommended":  # ebmkit's README: Langevin(1e-2, steps=60), ReplayBuffer(8192), Trainer lr 1e-3
        if a.method == "dsm":
            loss_fn = ebm.DenoisingScoreMatching()
            notes.append("DenoisingScoreMatching() (sigma=0.1 default)")
        else:
            loss_fn = ebm.ContrastiveDivergence(ebm.LangevinDynamics(step_size=1e-2, steps=60),
                                                buffer=ebm.ReplayBuffer(8192, (2,)))
            notes.append("README: LangevinDynamics(1e-2, steps=60), ReplayBuffer(8192, (2,)), no energy_reg")
    elif a.method == "dsm":
        loss_fn = ebm.DenoisingScoreMatching(sigma=DSM_SIGMA)
    elif a.method == "pcd":  # ebmkit's Langevin is x - eps grad E + sqrt(2 eps) z: eps = 0.01 as given
        loss_fn = ebm.ContrastiveDivergence(
            ebm.LangevinDynamics(step_size=ULA_STEP, steps=LANGEVIN_STEPS),
            buffer=ebm.ReplayBuffer(CHAINS, (2,), reinit_prob=REINIT), energy_reg=ENERGY_REG)
        notes.append("ReplayBuffer(256, reinit_prob=0.05): slots drawn with replacement, noise N(0, I)")
    elif a.method == "ssm":
        loss_fn = ebm.SlicedScoreMatching(n_projections=1, vr=True)
    elif a.method == "esm":
        loss_fn = ebm.ExactScoreMatching()
    else:
        loss_fn = ebm.NoiseContrastiveEstimation()
        notes.append("NoiseContrastiveEstimation() default noise N(0, I), ratio 1")
    trainer = ebm.Trainer(energy, loss_fn, lr=LR, device="cpu")
    x = torch.from_numpy(train)
    rec = _torch_loop(a, torch, lambda n: trainer.fit(x, steps=n, batch_size=BATCH, verbose=False), t_import,
                      time.perf_counter() - T0)
    energy.eval()
    return dict(rec, logp_grid=_torch_eval(torch, energy, grid), logp_test=_torch_eval(torch, energy, test),
                notes=notes + ["ebm.Trainer.fit(steps=chunk) per chunk"], diverged=False)


def run_torchebm(a, train, test, grid):
    import torch
    from torchebm.core import BaseModel
    from torchebm.losses import ContrastiveDivergence, DenoisingScoreMatching, ScoreMatching, SlicedScoreMatching
    from torchebm.samplers import LangevinDynamics

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_import = time.perf_counter() - T0

    class MLPEnergy(BaseModel):  # the README's pattern, with the protocol's 2-128-128-1
        def __init__(self):
            super().__init__()
            self.net = _torch_mlp(torch)

        def forward(self, x):
            return self.net(x).squeeze(-1)

    energy = MLPEnergy()
    notes = []
    if a.config == "recommended":  # torchebm's README
        if a.method == "dsm":
            loss_fn = DenoisingScoreMatching(model=energy, noise_scale=0.1)
            notes.append("README: DenoisingScoreMatching(noise_scale=0.1)")
        else:
            sampler = LangevinDynamics(model=energy, step_size=0.1, noise_scale=1.0)
            loss_fn = ContrastiveDivergence(model=energy, sampler=sampler, k_steps=10, persistent=True,
                                            buffer_size=8192)
            notes.append("README: Langevin(step 0.1, noise 1.0), CD k=10, persistent, buffer 8192 "
                         "(defaults: energy_reg 0.001, new_sample_ratio 0.05, init_steps 100)")
    elif a.method == "dsm":
        loss_fn = DenoisingScoreMatching(model=energy, noise_scale=DSM_SIGMA)
    elif a.method == "pcd":
        # torchebm's Langevin: x - eta grad U + sqrt(2 eta) * noise_scale * z: eta = 0.01, noise_scale = 1.
        sampler = LangevinDynamics(model=energy, step_size=ULA_STEP, noise_scale=1.0)
        loss_fn = ContrastiveDivergence(model=energy, sampler=sampler, k_steps=LANGEVIN_STEPS, persistent=True,
                                        buffer_size=CHAINS, new_sample_ratio=REINIT, energy_reg_weight=ENERGY_REG)
        notes.append("persistent buffer of 256 (start 0.01*N(0,I), 100 warm-up steps by default); "
                     "new_sample_ratio=0.05 jitters 5% of starts by 0.01*N(0,I): no re-initialisation from noise")
    elif a.method == "ssm":
        loss_fn = SlicedScoreMatching(model=energy, n_projections=1, projection_type="gaussian")
    else:
        loss_fn = ScoreMatching(model=energy, hessian_method="exact")
    opt = torch.optim.Adam(energy.parameters(), lr=LR)
    x = torch.from_numpy(train)

    def steps(n):
        for _ in range(n):
            out = loss_fn(x[torch.randint(x.shape[0], (BATCH,))])
            loss = out[0] if isinstance(out, tuple) else out
            opt.zero_grad()
            loss.backward()
            opt.step()

    rec = _torch_loop(a, torch, steps, t_import, time.perf_counter() - T0)
    return dict(rec, logp_grid=_torch_eval(torch, energy, grid), logp_test=_torch_eval(torch, energy, test),
                notes=notes + ["plain loop over the loss module and torch.optim.Adam (the README's)"],
                diverged=False)


def run_torch(a, train, test, grid):
    """The same two methods in plain PyTorch, written by hand."""
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_import = time.perf_counter() - T0
    net = _torch_mlp(torch)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    x = torch.from_numpy(train)
    chains = torch.randn(CHAINS, 2)

    def energy(y):
        return net(y).squeeze(-1)

    def dsm_loss(xb):
        z = torch.randn_like(xb)
        xn = (xb + DSM_SIGMA * z).requires_grad_(True)
        (g,) = torch.autograd.grad(energy(xn).sum(), xn, create_graph=True)
        return 0.5 * ((-DSM_SIGMA * g + z) ** 2).sum(1).mean()

    def pcd_loss(xb):
        nonlocal chains
        fresh = torch.rand(CHAINS) < REINIT
        y = torch.where(fresh[:, None], torch.randn(CHAINS, 2), chains)
        for p in net.parameters():
            p.requires_grad_(False)
        for _ in range(LANGEVIN_STEPS):
            y = y.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(energy(y).sum(), y)
            y = y - ULA_STEP * g + math.sqrt(2 * ULA_STEP) * torch.randn_like(y)
        for p in net.parameters():
            p.requires_grad_(True)
        chains = y.detach()
        e_pos, e_neg = energy(xb), energy(chains)
        return e_pos.mean() - e_neg.mean() + ENERGY_REG * ((e_pos**2).mean() + (e_neg**2).mean())

    loss_fn = dsm_loss if a.method == "dsm" else pcd_loss

    def steps(n):
        for _ in range(n):
            loss = loss_fn(x[torch.randint(x.shape[0], (BATCH,))])
            opt.zero_grad()
            loss.backward()
            opt.step()

    rec = _torch_loop(a, torch, steps, t_import, time.perf_counter() - T0)
    return dict(rec, logp_grid=_torch_eval(torch, energy, grid), logp_test=_torch_eval(torch, energy, test),
                notes=["hand-written loop; PCD: 256 chains, 5% re-initialised from N(0, I) per iteration"],
                diverged=False)


RUNNERS = {"declebm": run_declebm, "jax-scan": run_jax_scan, "ebmkit": run_ebmkit, "torchebm": run_torchebm,
           "torch": run_torch}


def main(argv=None):
    a = build_parser().parse_args(argv)
    if a.method not in METHODS[a.library]:
        raise SystemExit(f"--method: {a.library} has no {a.method} (it has {', '.join(METHODS[a.library])})")
    if a.config == "recommended" and a.method not in RECOMMENDED:
        raise SystemExit(f"--config recommended: only {', '.join(RECOMMENDED)}")
    with np.load(a.data) as f:
        train, test = f["train"], f["test"]
    grid, _ = common.grid_points()
    rec = RUNNERS[a.library](a, train, test, grid)
    metrics = common.scores(rec.pop("logp_grid"), rec.pop("logp_test"), test)
    times, chunk_steps = rec.pop("chunk_times"), rec.pop("chunk_steps")
    t_end = rec.pop("t_end")
    out = dict(
        library=a.library, method=a.method, seed=a.seed, config=a.config, budget=a.budget,
        iterations=a.iterations if a.budget is None else None, chunk=a.chunk, threads=a.threads,
        ms_per_iter=common.median_ms(times, chunk_steps), train_wall_s=t_end - T0,
        first_chunk_s=times[0] if times else None, peak_rss_mib=common.peak_rss_mib(), **metrics, **rec,
    )
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("library", "method", "seed", "steps", "ms_per_iter", "nll")}))


if __name__ == "__main__":
    main()
