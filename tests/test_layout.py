"""The one-namespace packaging and the one-way arrows of DESIGN.md."""

import ast
import os
import pathlib

import pytest

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


ROOT = pathlib.Path(__file__).resolve().parent.parent


def _repository_files() -> list[pathlib.Path]:
    """The tracked files (git), or every file outside hidden and build folders without git."""
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "__pycache__", ".pytest_cache"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_the_repository_stands_alone():
    # The design documents outside the repository are not shipped: no file may send a
    # reader there (ARCHITECTURE.md holds the contract).
    outside = ".." + "/shared"
    offenders = [str(p.relative_to(ROOT)) for p in _repository_files()
                 if outside in p.read_text(encoding="utf-8", errors="ignore")]
    assert not offenders, offenders
    assert (ROOT / "ARCHITECTURE.md").is_file()
    assert "ARCHITECTURE.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def _third_party_imports(folders: list[str]) -> dict[str, str]:
    """Top-level modules imported anywhere (also inside functions) under ``folders``,
    outside the standard library and declebm itself: {module: first file using it}."""
    import sys

    found = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("declebm", "__future__"):
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_the_readme_install_command_installs_what_the_library_and_examples_import():
    # `pip install ".[plot]"` (the README's command) must get every third-party module the
    # library and the examples import, directly or through a dependency's own requirements
    # (scipy comes with jax, tqdm with numpyro).
    import importlib.metadata as md
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + list(project["optional-dependencies"]["plot"])

    def name(requirement: str) -> str:
        return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")

    installed, todo = set(), [name(r) for r in wanted]
    while todo:  # the closure of the requirements, without extras
        dist = todo.pop()
        if dist in installed:
            continue
        installed.add(dist)
        try:
            requires = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        todo += [name(r) for r in requires if "extra ==" not in r]
    providers = md.packages_distributions()
    # Optional backends of declebm.callbacks, imported only when the writer that needs one
    # is made, each installed by its own extra (CLU: TensorBoardWriter's other backend).
    optional = {"tensorboardX": "tensorboard", "wandb": "wandb", "clu": None}
    extras = project["optional-dependencies"]
    for module, extra in optional.items():
        assert extra is None or any(name(r) == module.lower() for r in extras[extra]), (module, extra)
    missing = {}
    for module, where in _third_party_imports(["declebm", "models", "inference", "examples"]).items():
        if module in optional:
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not dists & installed:
            missing[module] = where
    assert not missing, f"imported but not installed by pip install '.[plot]': {missing}"


@pytest.mark.slow
def test_the_checkout_imports_beside_a_regular_install(tmp_path):
    # The README's commands run in the repository root after `pip install ".[plot]"` (not
    # editable). There the folder declebm/ comes first on sys.path and shadows the install;
    # it must import as the install does (models/ and inference/ as declebm.models and
    # declebm.inference), and elsewhere the install itself must import.
    import shutil
    import site
    import subprocess
    import sys

    src, target = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("declebm", "models", "inference"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                          "--target", str(target), str(src)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # -S: no site initialisation, so no .pth file (an editable install's import hook) can
    # rescue the import; the dependencies come from this interpreter's site-packages.
    paths = [str(target), *site.getsitepackages(), site.getusersitepackages()]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(paths)
    code = ("import declebm, declebm.models, declebm.inference\n"
            "from declebm.inference import MALA\n"
            "from declebm.models import MLPEnergy\n"
            "assert declebm.models is declebm.__dict__['models'] and MALA.__module__.startswith('declebm.inference')\n"
            "print(declebm.__file__, declebm.models.__file__, declebm.inference.__file__, sep='\\n')\n")
    for cwd, where in ((ROOT, ROOT), (tmp_path, target / "declebm")):
        out = subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"import declebm in {cwd}:\n{out.stderr[-3000:]}"
        core, models, inference = (pathlib.Path(line).resolve() for line in out.stdout.split())
        assert core.parent.name == "declebm" and models.parent.name == "models" and inference.parent.name == "inference"
        assert pathlib.Path(where).resolve() in core.parents, (cwd, core)
