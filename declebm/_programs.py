"""Room for compiled programs in a long-lived process.

XLA:CPU keeps the machine code of every compiled program in memory mappings of its own
(about nine per kernel; a ``fit`` of a new shape compiles some 70 kernels, about 650
mappings), and JAX keeps every compiled program alive in its caches. Linux caps the
mappings of a process (``vm.max_map_count``, 65530 by default). Past the cap, XLA's next
compilation cannot map its code and the process dies (``LLVM ERROR: Unable to allocate
section memory``, or a segmentation fault inside ``backend_compile_and_load``): about a
hundred fits of new shapes in one process (a sweep, a notebook, a test worker) reach it.

``make_room_for_programs`` frees JAX's compiled programs (``jax.clear_caches()``) once the
process holds a given fraction of the cap; they compile again when next called. ``fit``
and ``sample`` call it before they compile.
"""

from __future__ import annotations

import gc
import warnings

import jax

#: the fraction of ``vm.max_map_count`` past which ``fit`` and ``sample`` free JAX's compiled programs
FIT_FRACTION = 0.75


def memory_maps() -> tuple[int, int] | None:
    """``(mappings this process holds, the system's cap vm.max_map_count)``, or ``None``
    where ``/proc`` does not say (not Linux)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            held = f.read().count(b"\n")
        with open("/proc/sys/vm/max_map_count") as f:
            cap = int(f.read())
    except (OSError, ValueError):
        return None
    return held, cap


def make_room_for_programs(fraction: float | None = None, *, warn: bool = True) -> bool:
    """Free JAX's compiled programs (``jax.clear_caches()``) when this process holds more
    than ``fraction`` (default ``FIT_FRACTION``) of the memory mappings Linux allows it;
    returns whether it did.

    With ``warn``, says so in a ``RuntimeWarning``: what it cost (the programs compile
    again) and how to avoid it."""
    maps = memory_maps()
    if maps is None or maps[0] < (FIT_FRACTION if fraction is None else fraction) * maps[1]:
        return False
    held, cap = maps
    jax.clear_caches()
    gc.collect()
    if warn:
        after = memory_maps()
        warnings.warn(
            f"[declebm] this process held {held} memory mappings, {held / cap:.0%} of the cap Linux "
            f"allows (vm.max_map_count = {cap}); XLA keeps each compiled program's code in mappings of "
            f"its own, and past the cap the next compilation kills the process. JAX's compiled programs "
            f"were freed (jax.clear_caches(): {after[0] if after else '?'} mappings now); they compile "
            f"again when next called. For many fits of new shapes in one process, call "
            f"jax.clear_caches() between them, or raise the cap (sysctl vm.max_map_count).",
            RuntimeWarning,
            stacklevel=3,
        )
    return True
