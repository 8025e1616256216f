"""Every script's ``--help`` opens with a whole sentence: its docstring's first paragraph.

``description=__doc__.splitlines()[0]`` cut a summary that spans two lines mid-sentence
(``particle_dynamics.py --help`` said "... PCD and a replay buffer on 8gaussians: the").
Read from the source (no imports, no subprocesses): the ``description=`` expression of the
script's ``argparse.ArgumentParser(...)`` is evaluated with the script's docstring.
"""

from __future__ import annotations

import ast
import glob
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPTS = sorted(
    p
    for pattern in ("examples/*.py", "benchmarks/*.py", "benchmarks/peers/*.py")
    for p in glob.glob(os.path.join(ROOT, pattern))
    if "ArgumentParser(" in open(p).read()
)


def _description(path: str) -> tuple[str, str]:
    tree = ast.parse(open(path).read())
    doc = ast.get_docstring(tree, clean=False)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "ArgumentParser"]
    assert calls, f"{path}: no argparse.ArgumentParser(...)"
    kw = next((k.value for k in calls[0].keywords if k.arg == "description"), None)
    assert kw is not None and doc, f"{path}: give the parser description=__doc__.split('\\n\\n')[0]"
    return doc, eval(compile(ast.Expression(kw), path, "eval"), {"__doc__": doc})  # noqa: S307 -- our own source


def test_scripts_are_found():
    names = {os.path.basename(p) for p in SCRIPTS}
    assert {"particle_dynamics.py", "recovery_digits.py", "toy2d.py", "bench_log_z.py"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=[os.path.relpath(p, ROOT) for p in SCRIPTS])
def test_help_description_is_the_docstrings_first_paragraph(path):
    doc, description = _description(path)
    first = doc.strip().split("\n\n")[0]
    assert " ".join(description.split()) == " ".join(first.split()), (path, description)
    assert description.rstrip().endswith((".", ")")), f"{os.path.relpath(path, ROOT)}: {description!r} ends mid-sentence"
