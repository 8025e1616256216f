"""Metric files without dependencies: JSON lines and CSV."""

from __future__ import annotations

import abc
import csv
import json
import math
import os
import re
from typing import Any

import numpy as np

from ._writer import AbstractWriter


def _check_path(path: Any, name: str = "path") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a file name (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise ValueError(f"{name}: expected a file name, got {'a folder ' if path else ''}{path!r}")
    return path


def _replace(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a file beside it and a rename, so that a crash
    leaves the old file or the new one, never half of one."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def save_png(path: str, image: np.ndarray) -> None:
    """Save a ``uint8 (H, W, C)`` image (``C`` 1, 3 or 4) as a PNG file (matplotlib's ``imsave``)."""
    from ..plot._plots import _plt

    _plt()  # matplotlib, or the ImportError naming the extra that installs it
    import matplotlib.image

    # grey as three equal channels: through a colour map the levels would not come back exactly
    matplotlib.image.imsave(path, np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image)


class _StepFile(AbstractWriter):
    """A file of one record per ``write_scalars`` call, each with its ``step``, opened at
    the first write. A file that already exists is continued: records at steps at or after
    the first step this writer writes are dropped first (a resumed run writes those steps
    again: they come from a run that got past its last checkpoint before it stopped), so
    no step appears twice. Images go to PNG files in the folder ``<file name without its
    extension>_images/``, named ``<name>-<step in eight digits>.png`` (a resumed run
    overwrites its own)."""

    def __init__(self, path: str | os.PathLike):
        self.path = _check_path(path)
        self._file = None

    @property
    def images_dir(self) -> str:
        """Where ``write_images`` puts its PNG files."""
        return os.path.splitext(self.path)[0] + "_images"

    # The format, in each subclass: read an existing file's records, drop those at steps
    # >= first_step (True when any was), render the records kept, append one.
    @abc.abstractmethod
    def _read(self, text: str) -> None: ...

    @abc.abstractmethod
    def _drop_from(self, first_step: int) -> bool: ...

    @abc.abstractmethod
    def _render(self) -> str: ...

    @abc.abstractmethod
    def _append(self, step: int, values: dict[str, float]) -> None: ...

    def _open(self, first_step: int) -> None:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8", newline="") as f:
                text = f.read()
            complete = text[: text.rfind("\n") + 1]  # a last line without its newline was cut short by a crash
            self._read(complete)
            if self._drop_from(first_step) or complete != text:
                _replace(self.path, self._render())
        self._file = open(self.path, "a", encoding="utf-8", newline="")

    def _write_scalars(self, step: int, values: dict[str, float]) -> None:
        if self._file is None:
            self._open(step)
        self._append(step, values)
        self._file.flush()

    def _write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        if self._file is None:
            self._open(step)
        os.makedirs(self.images_dir, exist_ok=True)
        for name, image in images.items():
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            save_png(os.path.join(self.images_dir, f"{safe}-{step:08d}.png"), image)

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class JSONLWriter(_StepFile):
    """Metrics as JSON lines: one object per write, ``{"step": 100, "loss": 0.52, ...}``.

    Non-finite values are written as ``null`` (JSON has no NaN). Array metrics become
    ``name/0``, ``name/1``, ... . A file that already exists is continued: its lines at
    steps at or after the first step this writer writes are dropped first (a resumed run
    writes them again), so no step appears twice; a last line cut short by a crash is
    dropped too. Images go to PNG files in ``images_dir``.

    Example: ``fit(..., callbacks=[JSONLWriter("runs/a/metrics.jsonl")])``; read back with
    ``[json.loads(line) for line in open(path)]`` or ``pandas.read_json(path, lines=True)``.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._lines: list[tuple[int, str]] = []

    def _read(self, text: str) -> None:
        for i, line in enumerate(text.splitlines()):
            try:
                record = json.loads(line)
                self._lines.append((int(record["step"]), line))
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"path: {self.path} exists and line {i + 1} is not a JSON record with a 'step'; "
                    "it is not a metrics file of this writer (choose another path)"
                ) from None

    def _drop_from(self, first_step: int) -> bool:
        kept = [(s, line) for s, line in self._lines if s < first_step]
        changed = len(kept) != len(self._lines)
        self._lines = kept
        return changed

    def _render(self) -> str:
        return "".join(line + "\n" for _, line in self._lines)

    def _append(self, step: int, values: dict[str, float]) -> None:
        record = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        self._file.write(json.dumps(record, allow_nan=False) + "\n")


class CSVWriter(_StepFile):
    """Metrics as CSV: a header ``step,loss,...`` and one row per write.

    A metric first seen after the first row adds a column (the file is rewritten with the
    new header; earlier rows leave it empty). Values are written as Python's shortest
    round-trip ``repr`` of the float (``nan``, ``inf`` included), so ``float(cell)`` gives
    back the exact number. Array metrics become ``name/0``, ``name/1``, ... . A file that
    already exists is continued: its rows at steps at or after the first step this writer
    writes are dropped first (a resumed run writes them again), so no step appears twice;
    a last row cut short by a crash is dropped too. Images go to PNG files in ``images_dir``.

    Example: ``fit(..., callbacks=[CSVWriter("runs/a/metrics.csv")])``; read back with
    ``csv.DictReader`` or ``pandas.read_csv``.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._columns: list[str] = ["step"]
        self._rows: list[dict[str, str]] = []

    def _read(self, text: str) -> None:
        if not text:
            return
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or reader.fieldnames[0] != "step":
            raise ValueError(
                f"path: {self.path} exists and its header does not start with 'step'; "
                "it is not a metrics file of this writer (choose another path)"
            )
        self._columns = list(reader.fieldnames)
        for i, row in enumerate(reader):
            try:
                int(row["step"])
                complete = None not in row and all(v is not None for v in row.values())
            except (TypeError, ValueError):
                complete = False
            if not complete:
                raise ValueError(f"path: {self.path} exists and its row {i + 1} is not a row of metrics with a step")
            self._rows.append(row)

    def _drop_from(self, first_step: int) -> bool:
        kept = [row for row in self._rows if int(row["step"]) < first_step]
        changed = len(kept) != len(self._rows)
        self._rows = kept
        return changed

    def _render(self) -> str:
        import io

        out = io.StringIO()
        writer = csv.DictWriter(out, self._columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        return out.getvalue()

    def _append(self, step: int, values: dict[str, float]) -> None:
        row = {"step": str(step), **{k: repr(float(v)) for k, v in values.items()}}
        new = [k for k in row if k not in self._columns]
        self._rows.append(row)
        if new or self._file.tell() == 0:
            self._columns += new
            self._file.close()
            _replace(self.path, self._render())
            self._file = open(self.path, "a", encoding="utf-8", newline="")
        else:
            csv.DictWriter(self._file, self._columns, restval="", lineterminator="\n").writerow(row)
