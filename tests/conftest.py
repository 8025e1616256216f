import os

import jax

# Tests compile many small programs; a persistent cache makes reruns cheap.
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

# Every Python subprocess a test starts (``python -c ...``, examples, benchmarks, workers)
# must import the INSTALLED declebm, as the tests themselves do (--import-mode=importlib).
# Without this, ``python -c`` run from the repository root puts the root first on
# sys.path, and the source folder ``declebm/`` (which lacks ``declebm.inference`` and
# ``declebm.models``: the install maps them from ``inference/`` and ``models/``) shadows
# the installed package. PYTHONSAFEPATH (Python >= 3.11) leaves the cwd and the script's
# folder off sys.path.
os.environ["PYTHONSAFEPATH"] = "1"
