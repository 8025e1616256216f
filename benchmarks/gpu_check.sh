#!/usr/bin/env bash
# GPU check of declebm: image rows at GPU sizes, the MLP peer protocol at width 512 with 4096
# chains, and a few hundred steps of every image training recipe on full-size synthetic data;
# writes benchmarks/RESULTS_gpu.md. Finishes within 8 minutes on one GPU (benchmarks/gpu_check.py
# skips what is left after --budget seconds, default 420). Runs from the repository root of a
# checkout, without internet:
#
#   bash benchmarks/gpu_check.sh              # the GPU run
#   bash benchmarks/gpu_check.sh --quick      # tiny sizes, a few steps (also runs on a CPU)
#
# Arguments are passed to benchmarks/gpu_check.py (--quick, --steps, --budget, --out).
#
# The GPU machine has jax (0.11, Python 3.12) but not blackjax. Carry it as a wheel in the
# ignored folder .whl/ at the repository root; fill it beforehand, on a machine with internet:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl blackjax==1.7.1
#
# (blackjax is pure Python: a py3-none-any wheel.) Any other pure-Python dependency missing
# there (equinox, optax, numpyro, jaxtyping, wadler-lindig, ...) can be carried the same way;
# the preflight below names what is missing. When .whl/ holds wheels, this script installs them
# with pip --no-index into /tmp/site and puts that on PYTHONPATH.
#
# declebm itself comes from this checkout, without pip: its packages map models/ and
# inference/ to declebm.models and declebm.inference (pyproject.toml's package-dir), so
# PYTHONPATH=. alone would not find them; a tree of symbolic links in /tmp/declebm_src lays
# the checkout out as the installed package (no build backend or network needed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

SRC=/tmp/declebm_src
rm -rf "$SRC"
mkdir -p "$SRC/declebm"
for entry in "$ROOT"/declebm/*; do
    ln -s "$entry" "$SRC/declebm/$(basename "$entry")"
done
ln -s "$ROOT/models" "$SRC/declebm/models"
ln -s "$ROOT/inference" "$SRC/declebm/inference"
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

python3 - <<'EOF'
import importlib, sys
missing = []
for name in ("jax", "numpy", "equinox", "optax", "blackjax", "numpyro", "jaxtyping"):
    try:
        importlib.import_module(name)
    except ImportError as e:
        missing.append(f"{name} ({e})")
if missing:
    sys.exit("gpu_check.sh: missing here: " + "; ".join(missing) + ". Carry their wheels in .whl/ (see this script's header).")
import declebm, jax
print(f"declebm from {declebm.__file__}; jax {jax.__version__}; devices {jax.devices()}", flush=True)
EOF

GPU_CHECK_SH=1 exec python3 "$ROOT/benchmarks/gpu_check.py" "$@"
