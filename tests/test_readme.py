"""Every ```python block of README.md runs, as written, in order, in one namespace.

The blocks read as one session (a later block uses the ``model``, ``data``, ``key`` and
``result`` of an earlier one), so they run one after the other in one namespace, in the
test's process, in a temporary working folder (the files a block writes, such as
``model.eqx`` or ``runs/pcd``, land there). A block that raises fails the test with its
README line and the traceback.

Sizes are shrunk so that the whole README runs in about a minute; only these literal
keyword values change, by the rules in ``SHRINK`` (each rule must still match the README,
so that a rewritten block cannot silently run at full size):

- ``num_steps=N`` and ``checkpoint_every=N``: ``max(2, N // 250)`` (5,000 training steps
  become 20; a checkpoint every 1,000 and a resume to 20,000 become 4 and 80);
- ``n=N`` for a dataset of more than 5,000 examples: ``n=2_000``;
- ``num_samples=N`` above 100: ``num_samples=64``.

After shrinking, any ``num_steps=`` above 100 left is an error (add a rule). Every other
character of a block runs unchanged. ``NOT_RUN`` lists the blocks that cannot run here,
each with its reason; those are still compiled (a syntax error fails the test). It is
empty: every block runs.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import traceback

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
README = os.path.join(ROOT, "README.md")

# (pattern, replacement function, what it shrinks); applied in this order.
SHRINK = [
    (re.compile(r"\b(num_steps|checkpoint_every)=(\d[\d_]*)"),
     lambda m: f"{m.group(1)}={max(2, int(m.group(2).replace('_', '')) // 250)}", "num_steps / checkpoint_every"),
    (re.compile(r"\bn=(\d[\d_]*)"),
     lambda m: "n=2_000" if int(m.group(1).replace("_", "")) > 5000 else m.group(0), "dataset size n"),
    (re.compile(r"\bnum_samples=(\d[\d_]*)"),
     lambda m: "num_samples=64" if int(m.group(1).replace("_", "")) > 100 else m.group(0), "num_samples"),
]

# Blocks (by their first README line) that cannot run in a test, with the reason. Each is
# still compiled. None today.
NOT_RUN: dict[str, str] = {}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, source)`` of every ```python block, in order."""
    blocks = []  # fences may be indented (a block inside a list item): the block is dedented
    for m in re.finditer(r"^[ \t]*```python[ \t]*\n(.*?)^[ \t]*```", text, re.S | re.M):
        blocks.append((text[: m.start()].count("\n") + 2, textwrap.dedent(m.group(1))))
    return blocks


def shrink(source: str) -> tuple[str, set[str]]:
    """The block with the sizes above made small, and the names of the rules that changed it."""
    used = set()
    for pattern, repl, name in SHRINK:
        new = pattern.sub(repl, source)
        if new != source:
            used.add(name)
        source = new
    return source, used


def _blocks() -> list[tuple[int, str]]:
    with open(README, encoding="utf-8") as f:
        return python_blocks(f.read())


def test_readme_has_python_blocks_and_each_compiles():
    blocks = _blocks()
    assert len(blocks) >= 5, "README.md: expected its ```python examples"
    for line, source in blocks:
        compile(source, f"README.md:{line}", "exec")  # a syntax error names the block's line


def test_every_shrink_rule_still_matches_and_nothing_runs_at_full_size():
    used = set()
    for line, source in _blocks():
        small, names = shrink(source)
        used |= names
        big = [int(v.replace("_", "")) for v in re.findall(r"\bnum_steps=(\d[\d_]*)", small)]
        assert all(v <= 100 for v in big), f"README.md:{line}: num_steps {big} left at full size; add a SHRINK rule"
    assert used == {name for _, _, name in SHRINK}, f"SHRINK rules that no longer match the README: {used}"
    firsts = {source.splitlines()[0] for _, source in _blocks()}
    assert set(NOT_RUN) <= firsts, f"NOT_RUN names blocks the README no longer has: {set(NOT_RUN) - firsts}"


def run_blocks(blocks: list[tuple[int, str]], namespace: dict | None = None) -> None:
    """Run ``[(line, source), ...]`` in one namespace, in order, in this process; the first
    block that raises fails with its README line and the traceback."""
    namespace = {"__name__": "__readme__"} if namespace is None else namespace
    for line, source in blocks:
        try:
            exec(compile(source, f"README.md:{line}", "exec", dont_inherit=True), namespace)  # no __future__ of this file
        except BaseException:
            pytest.fail(f"the README block at line {line} raised:\n{traceback.format_exc()[-5000:]}")


@pytest.mark.slow  # every block, in order (about half a minute on two cores)
def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    # In the test's process, as the examples' smoke runs (conftest's run_script): a fresh
    # interpreter cost 3.5 s to start and compiled every small program again. The files a
    # block writes land in tmp_path; figures are closed afterwards.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    runs = [(line, shrink(source)[0]) for line, source in _blocks() if source.splitlines()[0] not in NOT_RUN]
    try:
        run_blocks(runs)
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")


def test_a_broken_block_fails_the_run_naming_its_line():
    """The run stops at the first block that raises and names its README line."""
    namespace = {"ran": []}
    blocks = [(10, "ran.append(10)"), (20, "x.missing_attribute"), (30, "ran.append(30)")]
    with pytest.raises(pytest.fail.Exception, match=r"(?s)README block at line 20 raised.*NameError"):
        run_blocks(blocks, namespace)
    assert namespace["ran"] == [10]


# ---- ARCHITECTURE.md's statements of the API, checked against the code ----------------------

def _architecture() -> str:
    with open(os.path.join(ROOT, "ARCHITECTURE.md"), encoding="utf-8") as f:
        return " ".join(f.read().split())


def _paragraph(text: str, start: str) -> str:
    i = text.index(start)
    j = text.find("**", i + len(start) + 2)
    return text[i: j if j > 0 else None]


def test_architecture_gives_the_real_signatures_of_fit_and_sample():
    import inspect

    import declebm as eb

    text = _architecture()
    for name, fn in (("fit", eb.fit), ("sample", eb.sample)):
        part = _paragraph(text, f"**{name}** (`declebm.{name}`)")
        missing = [p for p in inspect.signature(fn).parameters if p != "kwargs" and p not in part]
        assert not missing, f"ARCHITECTURE.md's {name} signature lacks {missing}"
    part = _paragraph(text, "**fit** (`declebm.fit`)")
    fields = [f for f in eb.FitResult.__dataclass_fields__ if f not in part]
    assert not fields, f"ARCHITECTURE.md's FitResult lacks {fields}"


def test_architecture_names_every_plot_and_the_strategy_vocabulary():
    import declebm as eb
    from declebm.inference import STRATEGY_NAMES

    text = _architecture()
    plots = _paragraph(text, "**plot** (`declebm.plot`)")
    public = [n for n in dir(eb.plot) if not n.startswith("_") and callable(getattr(eb.plot, n))]
    assert [n for n in public if f"`{n}`" not in plots] == [], plots
    callbacks = _paragraph(text, "**callbacks** (`declebm.callbacks`)")
    public = [n for n in dir(eb.callbacks) if not n.startswith("_")]
    assert public and [n for n in public if f"`{n}`" not in callbacks] == [], callbacks
    m = re.search(r"one vocabulary of names \(`([a-z ]+)`\)", text)
    assert m is not None and tuple(m.group(1).split()) == STRATEGY_NAMES, (m and m.group(1), STRATEGY_NAMES)
    assert "(planned)" not in text
