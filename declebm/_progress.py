"""Progress of a training run: a tqdm bar on a terminal or in a notebook, short log
lines in files and CI."""

from __future__ import annotations

import sys
import time
from typing import Any

from ._hosts import is_writer


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:  # noqa: BLE001 -- any failure means "not a notebook"
        return False


def _format(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())


class Progress:
    """Reports once per chunk (never per step, so the device is never waited on for it).

    ``mode``: ``"bar"`` (``tqdm.auto``: a terminal bar, or a widget in Jupyter), ``"log"``
    (one line about every 10% of the run or every 30 s, for files and CI), ``"off"``, or
    ``"auto"``: a bar when stderr is a terminal or in a notebook, log lines otherwise.
    With several processes (``jax.distributed``), only process 0 reports: every other
    one is ``"off"``.
    """

    def __init__(self, num_steps: int, mode: str, *, initial: int = 0, log_every_s: float = 30.0):
        if not is_writer():
            mode = "off"
        if mode == "auto":
            mode = "bar" if (sys.stderr.isatty() or _in_notebook()) else "log"
        self.mode, self.num_steps, self.log_every_s = mode, num_steps, log_every_s
        self.t0 = self.t_last = self.t_print = time.perf_counter()
        self.step_last: int | None = None
        self.last_print = -1
        self.bar: Any = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=num_steps, initial=initial, desc="declebm", unit="step", dynamic_ncols=True,
                            leave=True, file=sys.stderr)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        first = self.step_last is None
        rate = (
            f"compiled+ran in {now - self.t0:.1f}s"
            if first
            else f"{(step - self.step_last) / max(now - self.t_last, 1e-9):.1f} steps/s"
        )
        done = step >= self.num_steps
        if self.bar is not None:
            self.bar.set_postfix_str(_format(metrics), refresh=False)
            self.bar.update(step - (self.step_last if not first else self.bar.n))
        elif self.mode == "log":
            due = first or done or step >= self.last_print + self.num_steps / 10 or now - self.t_print >= self.log_every_s
            if due:
                self.last_print, self.t_print = step, now
                sys.stderr.write(f"[declebm] step {step}/{self.num_steps}  {rate}  {_format(metrics)}\n")
                sys.stderr.flush()
        self.t_last, self.step_last = now, step

    def message(self, text: str) -> None:
        """A line that must be seen (a rollback, a warning), without breaking the bar."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.mode != "off":
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
