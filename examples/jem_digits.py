"""Train JEM on the bundled 8x8 digits: a classifier that is also an energy-based model.

    python examples/jem_digits.py                 # CPU defaults, a few minutes
    python examples/jem_digits.py --steps 20000 --width 512   # longer, on a GPU

Data: scikit-learn's 1797 digits, dequantised into [0, 1), split 80/20 with their labels
(``declebm.datasets.digits(with_labels=True)``). The model is
``EBM(ClassifierEnergy(MLPClassifier(64, 10, width, 2)))``: logits ``f(x)``, energy
``E(x) = -logsumexp_y f(x)[y]`` (Grathwohl et al. 2019). It is trained twice with the same
network, batches and optimizer: by ``inference.JEM()`` (cross-entropy plus ``log p(x)``
by SGLD from a replay buffer, the paper's constants, with the energy regulariser
``energy_reg=0.1`` of Du & Mordatch 2019, without which these chains run away) and by
``JEM(generative_weight=0)``, the plain classifier.

Reported for both, on the test split: accuracy; expected calibration error (ECE, 15
equal-width bins of the top-class probability, the paper's measure); and the AUROC of
``log p~(x) = -E(x)`` as an out-of-distribution score, test digits against uniform noise on
[0, 1)^64 and against the test digits flipped left to right (1.0: every digit scores above
every outlier; 0.5: chance). Writes ``OUT/jem_digits.json`` and, with matplotlib, a grid of
samples from JEM's replay buffer beside test digits (``OUT/jem_digits.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
import optax
from sklearn.metrics import roc_auc_score

import declebm as eb
from declebm.inference import JEM
from declebm.models import ClassifierEnergy, MLPClassifier

DEFAULTS = dict(steps=2000, batch_size=64, width=256)
QUICK = dict(steps=20, batch_size=32, width=32)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, help=f"parameter updates ({DEFAULTS['steps']})")
    ap.add_argument("--batch-size", type=int, help=f"labelled batch ({DEFAULTS['batch_size']})")
    ap.add_argument("--width", type=int, help=f"hidden units of the classifier ({DEFAULTS['width']})")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    ap.add_argument("--quick", action="store_true", help="tiny everything (smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/jem")
    return ap


def expected_calibration_error(log_probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """``sum_b |B_b|/n |accuracy(B_b) - confidence(B_b)|`` over equal-width bins of the top-class probability."""
    probs = np.exp(log_probs)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def evaluate(model, x_test: np.ndarray, y_test: np.ndarray, key) -> dict:
    energy = model.energy_module
    log_probs = np.asarray(jax.vmap(energy.log_prob_y)(x_test))
    score = lambda x: -np.asarray(model.energy_batch(x))  # noqa: E731 -- log p~(x)
    noise = np.asarray(jax.random.uniform(key, x_test.shape, x_test.dtype))
    flipped = np.asarray(x_test).reshape(-1, 8, 8)[:, :, ::-1].reshape(x_test.shape)
    s_in = score(x_test)

    def auroc(outliers):
        s_out = score(outliers)
        return float(roc_auc_score(np.r_[np.ones(len(s_in)), np.zeros(len(s_out))], np.r_[s_in, s_out]))

    return dict(
        accuracy=float(np.mean(log_probs.argmax(axis=1) == y_test)),
        ece=expected_calibration_error(log_probs, y_test),
        auroc_uniform_noise=auroc(noise),
        auroc_flipped_digits=auroc(flipped),
    )


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    s = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in preset.items()}
    k_data, k_model, k_fit, k_eval = jax.random.split(jax.random.key(args.seed), 4)
    x_train, x_test, y_train, y_test = eb.datasets.digits(key=k_data, with_labels=True)
    y_test = np.asarray(y_test)
    model = eb.EBM(ClassifierEnergy(MLPClassifier(64, 10, s["width"], 2, key=k_model)))
    optimizer = optax.adam(args.lr)
    # The paper's SGLD and buffer; without the energy regulariser the chains leave the data's
    # box on these [0, 1) images and E(samples) grows without bound (1e12 by step 3000).
    runs, results = {"jem": JEM(energy_reg=0.1), "classifier": JEM(generative_weight=0.0)}, {}
    for name, strategy in runs.items():
        t0 = time.perf_counter()
        fit = eb.fit(model, (x_train, y_train), strategy, optimizer=optimizer, num_steps=s["steps"],
                     batch_size=s["batch_size"], key=k_fit, progress="log", divergence_guard=None)
        numbers = evaluate(fit.model, x_test, y_test, k_eval)
        numbers["train_seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = (fit, numbers)
        print(f"{name:>10}: " + "  ".join(f"{k} {v:.4g}" for k, v in numbers.items()), flush=True)
    os.makedirs(args.out, exist_ok=True)
    out = dict(settings=s, lr=args.lr, seed=args.seed, strategy=repr(runs["jem"]),
               **{name: numbers for name, (_, numbers) in results.items()})
    with open(os.path.join(args.out, "jem_digits.json"), "w") as f:
        json.dump(out, f, indent=2)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return out
    fig, axes = eb.plot.figure(1, 2, size=4)
    buffer = np.asarray(results["jem"][0].state.chains[:64])
    eb.plot.images(buffer, ax=axes[0, 0], title="JEM samples (replay buffer)")
    eb.plot.images(np.asarray(x_test[:64]), ax=axes[0, 1], title="test digits")
    fig.savefig(os.path.join(args.out, "jem_digits.png"), dpi=100, bbox_inches="tight")
    return out


if __name__ == "__main__":
    main()
