"""Per-rule conda environments: every rule names an env file that exists and parses, every env pins the
versions the tests ran with (equal to pyproject.toml and to the installed distributions), and every
third-party module a rule's script needs at run time, directly or through the `haf` library (including
imports inside functions), is provided by that rule's env.

The conda channels cannot be reached from CI, so this static check is what stands between a missing
package and a job that fails on a cluster. Under `--sdm conda` Snakemake appends its own sys.path to every
script job, so a package missing from the env may still import from the host environment on a
workstation and fail only where the host lacks it: hence an explicit check instead of a trial run.

`snakemake` itself is not part of any env: the script preamble puts the running Snakemake's install on
sys.path (see docs/cluster.md), so it is accepted as provided implicitly.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_DIR = REPO / "envs"
LIB_NAME = "haf"
LIB_ROOT = REPO / "src" / LIB_NAME

# Provided by Snakemake's script preamble, not by the env (docs/cluster.md).
IMPLICIT = "<snakemake preamble>"

# Import name -> distribution name. Every third-party import must be listed here: an unknown one fails
# the test with a message to add it (with the distribution that provides it).
IMPORT_TO_PACKAGE: dict[str, str] = {
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "sksurv": "scikit-survival",
    "h5py": "h5py",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "huggingface_hub": "huggingface-hub",
    "safetensors": "safetensors",
    "jsonschema": "jsonschema",
    "snakemake": IMPLICIT,
}

STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def normalize(name: str) -> str:
    """PEP 503 name normalisation (huggingface_hub == huggingface-hub == HuggingFace.Hub)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------------------
# env files and pyproject pins
# --------------------------------------------------------------------------------------------------
_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(==|=|>=|<=|~=|>|<)?\s*([^\s;#]*)")


@dataclass(frozen=True)
class Pin:
    name: str  # normalised
    op: str | None
    version: str | None
    source: str  # "conda" or "pip"


def parse_env(path: Path) -> tuple[list[str], list[Pin]]:
    """Channels and package pins of a conda env file; raises AssertionError naming the file on bad form."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a YAML mapping"
    channels = data.get("channels")
    assert isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels), (
        f"{path}: `channels:` must be a non-empty list of channel names"
    )
    deps = data.get("dependencies")
    assert isinstance(deps, list) and deps, f"{path}: `dependencies:` must be a non-empty list"
    pins: list[Pin] = []
    for dep in deps:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"{path}: unexpected mapping in dependencies: {dep}"
            assert isinstance(dep["pip"], list), f"{path}: `pip:` must be a list"
            for spec in dep["pip"]:
                m = _SPEC.match(str(spec))
                assert m, f"{path}: cannot parse pip requirement {spec!r}"
                pins.append(Pin(normalize(m.group(1)), m.group(2), m.group(3) or None, "pip"))
        else:
            m = _SPEC.match(str(dep))
            assert m, f"{path}: cannot parse conda dependency {dep!r}"
            pins.append(Pin(normalize(m.group(1)), m.group(2), m.group(3) or None, "conda"))
    return channels, pins


def pyproject_pins() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"].get("optional-dependencies", {}).values():
        reqs.extend(extra)
    pins = {}
    for req in reqs:
        m = _SPEC.match(req)
        assert m and m.group(2) == "==", f"pyproject.toml: {req!r} is not an exact (==) pin"
        pins[normalize(m.group(1))] = m.group(3)
    return pins


def env_packages(path: Path) -> set[str]:
    """Normalised names of the packages an env provides (python and pip themselves excluded)."""
    _, pins = parse_env(path)
    return {p.name for p in pins} - {"python", "pip"}


# --------------------------------------------------------------------------------------------------
# static import walk
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    module: str  # top-level third-party module name
    where: str  # "file:line" of the import statement


class ImportWalker:
    """Third-party modules a script needs at run time, following the library it imports.

    Follows `import lib.x`, `from lib.x import y` (y a submodule or not), relative imports inside the
    library, package `__init__` files along the way, constant `importlib.import_module("lib.x")`, and
    sibling modules of the script. Imports inside functions count (they run when the function runs);
    imports under `if TYPE_CHECKING:` and inside `try: ... except ImportError:` do not.
    """

    def __init__(self, lib_root: Path, lib_name: str = LIB_NAME):
        self.lib_root = lib_root
        self.lib_name = lib_name
        self.missing_modules: list[str] = []

    # -- module <-> file -------------------------------------------------------------------------
    def lib_file(self, dotted: str) -> Path | None:
        parts = dotted.split(".")
        if parts[0] != self.lib_name:
            return None
        base = self.lib_root.joinpath(*parts[1:])
        if base.with_suffix(".py").is_file() and len(parts) > 1:
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        return None

    def lib_dotted(self, path: Path) -> tuple[str, bool]:
        rel = path.resolve().relative_to(self.lib_root.resolve()).with_suffix("")
        parts = [self.lib_name, *rel.parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        return ".".join(parts), is_package

    # -- AST -------------------------------------------------------------------------------------
    @staticmethod
    def _statements(tree: ast.AST):
        """Yield (node, optional) for import-like nodes, skipping TYPE_CHECKING blocks."""

        def is_type_checking(test: ast.expr) -> bool:
            return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            )

        def catches_import_error(handlers) -> bool:
            for h in handlers:
                names = []
                if isinstance(h.type, ast.Name):
                    names = [h.type.id]
                elif isinstance(h.type, ast.Tuple):
                    names = [e.id for e in h.type.elts if isinstance(e, ast.Name)]
                if {"ImportError", "ModuleNotFoundError"} & set(names):
                    return True
            return False

        def visit(node: ast.AST, optional: bool):
            if isinstance(node, ast.If) and is_type_checking(node.test):
                for child in node.orelse:
                    yield from visit(child, optional)
                return
            if isinstance(node, ast.Try) and catches_import_error(node.handlers):
                for child in node.body:
                    yield from visit(child, True)
                for child in [*node.handlers, *node.orelse, *node.finalbody]:
                    yield from visit(child, optional)
                return
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, optional
            elif (
                isinstance(node, ast.Call)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and (
                    (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                    or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
                )
            ):
                yield node, optional
            for child in ast.iter_child_nodes(node):
                yield from visit(child, optional)

        yield from visit(tree, False)

    def walk(self, script: Path) -> set[Found]:
        found: set[Found] = set()
        seen: set[Path] = set()
        queue: list[Path] = [script]
        script_dir = script.parent

        def enqueue_lib(dotted: str, where: str) -> bool:
            parts = dotted.split(".")
            ok = True
            for i in range(1, len(parts) + 1):  # the package __init__ files run too
                path = self.lib_file(".".join(parts[:i]))
                if path is None:
                    ok = False
                    break
                queue.append(path)
            if not ok:
                self.missing_modules.append(f"{where}: imports {dotted}, which does not exist")
            return ok

        while queue:
            path = queue.pop()
            if path in seen:
                continue
            seen.add(path)
            in_lib = self.lib_root.resolve() in path.resolve().parents
            package = None
            if in_lib:
                dotted, is_pkg = self.lib_dotted(path)
                package = dotted if is_pkg else dotted.rpartition(".")[0]
            tree = ast.parse(path.read_text(), filename=str(path))
            for node, optional in self._statements(tree):
                where = f"{path.relative_to(REPO) if REPO in path.parents else path}:{node.lineno}"
                if optional:
                    continue
                targets: list[tuple[str, list[str]]] = []  # (module, names imported from it)
                if isinstance(node, ast.Import):
                    targets = [(alias.name, []) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        if package is None:
                            raise AssertionError(f"{where}: relative import outside the library")
                        base = package.split(".")
                        base = base[: len(base) - (node.level - 1)]
                        module = ".".join(base + ([node.module] if node.module else []))
                    else:
                        module = node.module or ""
                    targets = [(module, [a.name for a in node.names])]
                else:  # import_module("x")
                    targets = [(node.args[0].value, [])]
                for module, names in targets:
                    top = module.split(".")[0]
                    if top == self.lib_name:
                        if enqueue_lib(module, where):
                            for name in names:
                                sub = f"{module}.{name}"
                                if self.lib_file(sub) is not None:
                                    enqueue_lib(sub, where)
                    elif not in_lib and (
                        (script_dir / f"{top}.py").is_file() or (script_dir / top / "__init__.py").is_file()
                    ):
                        local = script_dir / f"{top}.py"
                        queue.append(local if local.is_file() else script_dir / top / "__init__.py")
                    elif top in STDLIB:
                        continue
                    else:
                        found.add(Found(top, where))
        return found


def required_packages(found: set[Found]) -> tuple[dict[str, list[str]], list[str]]:
    """Map found modules to packages: ({package: [where...]}, [errors for unmapped modules])."""
    needed: dict[str, list[str]] = {}
    errors = []
    for f in sorted(found, key=lambda f: (f.module, f.where)):
        package = IMPORT_TO_PACKAGE.get(f.module)
        if package is None:
            errors.append(
                f"{f.where}: third-party module {f.module!r} is not in IMPORT_TO_PACKAGE "
                f"(tests/test_envs.py): add it with the distribution that provides it"
            )
        elif package != IMPLICIT:
            needed.setdefault(normalize(package), []).append(f.where)
    return needed, errors


# --------------------------------------------------------------------------------------------------
# the workflow's rules
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rules(workflow_rules) -> list[dict]:
    return workflow_rules


def executing(rules: list[dict]) -> list[dict]:
    """Rules that run something (pure target rules like `all` have nothing to put in an env)."""
    return [r for r in rules if not r["norun"]]


def test_every_rule_names_an_existing_env_file(rules):
    problems = []
    for r in executing(rules):
        if r["conda"] is None:
            problems.append(f"rule {r['name']} ({r['snakefile']}:{r['lineno']}) has no `conda:` directive")
        elif r["conda_path"] is None:
            problems.append(f"rule {r['name']}: `conda: {r['conda']}` must name an env file in envs/")
        elif not Path(r["conda_path"]).is_file():
            problems.append(f"rule {r['name']}: env file {r['conda_path']} does not exist")
        elif Path(r["conda_path"]).parent != ENV_DIR:
            problems.append(f"rule {r['name']}: env file {r['conda_path']} is not in envs/")
    assert not problems, "\n".join(problems)


def test_every_env_file_is_used(rules):
    used = {Path(r["conda_path"]) for r in rules if r["conda_path"]}
    unused = sorted(p.name for p in ENV_DIR.glob("*.yaml") if p not in used)
    assert not unused, f"env files no rule uses: {unused}"


@pytest.mark.parametrize("env_file", sorted(ENV_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_env_file_parses_and_pins_tested_versions(env_file):
    channels, pins = parse_env(env_file)
    assert "conda-forge" in channels, f"{env_file}: channels {channels} should include conda-forge"
    assert "defaults" not in channels, f"{env_file}: the `defaults` channel is not used (licence, mixing)"
    by_name = {p.name: p for p in pins}
    assert len(by_name) == len(pins), f"{env_file}: a package is listed twice"
    py = by_name.get("python")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert py is not None and py.version == running, (
        f"{env_file}: python must be pinned to the version the tests ran with ({running}), got {py}"
    )
    project = pyproject_pins()
    problems = []
    for pin in pins:
        if pin.name in ("python", "pip"):
            continue
        if pin.op not in ("==",) and not (pin.source == "conda" and pin.op == "=" and pin.version):
            problems.append(f"{pin.name}: not pinned to an exact version ({pin.op}{pin.version})")
            continue
        if pin.name not in project:
            problems.append(f"{pin.name}=={pin.version}: not pinned in pyproject.toml")
        elif project[pin.name] != pin.version:
            problems.append(f"{pin.name}: env pins {pin.version}, pyproject.toml pins {project[pin.name]}")
        try:
            installed = importlib.metadata.version(pin.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{pin.name}: not installed where the tests run, so its pin is untested")
        else:
            if installed != pin.version:
                problems.append(f"{pin.name}: env pins {pin.version}, tests ran with {installed}")
    assert not problems, f"{env_file}:\n" + "\n".join(problems)


def test_every_rule_script_exists(rules):
    missing = [
        f"rule {r['name']} ({Path(r['snakefile']).relative_to(REPO)}:{r['lineno']}): "
        f"script {Path(r['script_path']).relative_to(REPO)} does not exist"
        for r in rules
        if r["script_path"] and not Path(r["script_path"]).is_file()
    ]
    assert not missing, "\n".join(missing)


def test_script_imports_are_provided_by_the_rules_env(rules):
    problems = []
    checked = 0
    for r in executing(rules):
        if not r["script_path"] or not r["conda_path"] or not Path(r["conda_path"]).is_file():
            continue  # reported by the tests above
        script = Path(r["script_path"])
        if not script.is_file():
            problems.append(f"rule {r['name']}: script {script.relative_to(REPO)} does not exist yet")
            continue
        walker = ImportWalker(LIB_ROOT)
        needed, errors = required_packages(walker.walk(script))
        problems.extend(f"rule {r['name']}: {e}" for e in errors + walker.missing_modules)
        provided = env_packages(Path(r["conda_path"]))
        for package, wheres in sorted(needed.items()):
            if package not in provided:
                problems.append(
                    f"rule {r['name']}: env {Path(r['conda_path']).name} lacks {package} "
                    f"(imported at {', '.join(sorted(set(wheres))[:3])})"
                )
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked, "no rule with a script was checked"


# --------------------------------------------------------------------------------------------------
# the checker itself can fail
# --------------------------------------------------------------------------------------------------
def _fake_tree(tmp_path: Path) -> tuple[Path, Path]:
    lib = tmp_path / "src" / LIB_NAME
    (lib / "sub").mkdir(parents=True)
    (lib / "__init__.py").write_text('"""lib."""\n')
    (lib / "sub" / "__init__.py").write_text("import numpy\n")
    (lib / "sub" / "deep.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import matplotlib\n"
        "try:\n    import tqdm\nexcept ImportError:\n    tqdm = None\n"
        "from .. import helpers\n"
        "def train():\n    import torch\n    return torch\n"
    )
    (lib / "helpers.py").write_text("import json\nimport yaml\n")
    scripts = tmp_path / "workflow" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "_shared.py").write_text("import importlib\nm = importlib.import_module('sklearn')\n")
    script = scripts / "run.py"
    script.write_text(f"import _shared\nfrom {LIB_NAME}.sub import deep\nimport os\nsnakemake.log\n")
    return lib, script


def test_walker_follows_lazy_relative_and_sibling_imports(tmp_path):
    lib, script = _fake_tree(tmp_path)
    walker = ImportWalker(lib)
    modules = {f.module for f in walker.walk(script)}
    # numpy via the package __init__, torch inside a function, yaml via a relative import,
    # sklearn via importlib in a sibling module; not matplotlib (TYPE_CHECKING), tqdm (optional), os.
    assert modules == {"numpy", "torch", "yaml", "sklearn"}
    assert not walker.missing_modules


def test_walker_reports_a_missing_package_and_an_unmapped_module(tmp_path):
    lib, script = _fake_tree(tmp_path)
    (lib / "helpers.py").write_text("import yaml\nimport notarealpackage\n")
    needed, errors = required_packages(ImportWalker(lib).walk(script))
    assert "torch" in needed and "pyyaml" in needed and "scikit-learn" in needed
    assert len(errors) == 1 and "notarealpackage" in errors[0] and "IMPORT_TO_PACKAGE" in errors[0]
    env = tmp_path / "env.yaml"
    env.write_text(
        "channels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - numpy==1\n"
    )
    assert set(needed) - env_packages(env) == {"torch", "pyyaml", "scikit-learn"}


def test_walker_reports_a_library_module_that_does_not_exist(tmp_path):
    lib, script = _fake_tree(tmp_path)
    script.write_text(f"from {LIB_NAME}.nothere import x\n")
    walker = ImportWalker(lib)
    walker.walk(script)
    assert walker.missing_modules and f"{LIB_NAME}.nothere" in walker.missing_modules[0]
