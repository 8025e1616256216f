"""The one-namespace packaging and the one-way arrows of DESIGN.md."""

import ast
import pathlib

import declebm
import declebm.inference
import declebm.models


def test_one_namespace_from_three_folders():
    core = pathlib.Path(declebm.__file__).parent
    assert pathlib.Path(declebm.models.__file__).parent.name == "models"
    assert pathlib.Path(declebm.inference.__file__).parent.name == "inference"
    assert declebm.inference is declebm.__dict__["inference"] and declebm.models is declebm.__dict__["models"]
    assert core.name == "declebm"


def test_core_never_imports_inference_or_models():
    core = pathlib.Path(declebm.__file__).parent
    offenders = []
    for path in core.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == core:
            continue  # the public face may expose the subpackages
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
                if node.level:
                    names += [a.name for a in node.names]
            if any(n.split(".")[-1] in ("inference", "models") or n.startswith(("declebm.inference", "declebm.models")) for n in names):
                offenders.append(f"{path.relative_to(core)}:{node.lineno}")
    assert not offenders, offenders
