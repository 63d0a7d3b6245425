"""The Azure ML step environment (pipeline/environment/) holds what the steps import.

Statically: every third-party module steps/ imports (lazily or not) comes from a
package the spec installs, every package is pinned, and every component runs on the
environment's dated base image. Slow: the spec builds in a fresh virtualenv with pip,
and every one of those modules imports there.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ENVIRONMENT = REPO / "pipeline" / "environment"
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+$")
DATED_IMAGE = re.compile(r"^mcr\.microsoft\.com/azureml/[a-z0-9.-]+:\d{8}\.v\d+$")


def _catches_import_error(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    return any(
        isinstance(h.type, ast.Name)
        and h.type.id in names
        or isinstance(h.type, ast.Tuple)
        and any(getattr(e, "id", "") in names for e in h.type.elts)
        for h in node.handlers
    )


def _modules(nodes) -> list[str]:
    found = []
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found += [alias.name for alias in sub.names]
            elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module:
                found.append(sub.module)
    return found


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top not in sys.stdlib_module_names and top not in {"steps", "__future__"}


def step_imports() -> list[tuple[str, ...]]:
    """Each third-party import of steps/, as alternatives: a try/except ImportError
    fallback is satisfied by any one of its imports."""
    groups: set[tuple[str, ...]] = set()
    for path in sorted((REPO / "steps").glob("*.py")):
        tree = ast.parse(path.read_text())
        in_fallbacks: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and _catches_import_error(node):
                names = _modules(node.body + [s for h in node.handlers for s in h.body])
                names = [n for n in names if _third_party(n)]
                if names:
                    groups.add(tuple(dict.fromkeys(names)))
                    in_fallbacks.update(names)
        for name in _modules([tree]):
            if _third_party(name) and name not in in_fallbacks:
                groups.add((name,))
    return sorted(groups)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def spec_pins() -> tuple[list[str], list[str]]:
    doc = yaml.safe_load((ENVIRONMENT / "conda.yaml").read_text())
    conda = [d for d in doc["dependencies"] if isinstance(d, str)]
    pip = [r for d in doc["dependencies"] if isinstance(d, dict) for r in d.get("pip", [])]
    return conda, pip


def modules_from(packages: set[str]) -> set[str]:
    """Dotted module names the given distributions install (read from this virtualenv,
    which has them at the development pins)."""
    modules = set()
    for dist in distributions():
        if _normalized(dist.metadata["Name"]) not in packages:
            continue
        for file in dist.files or []:
            parts = file.parts
            if not parts or parts[0].endswith((".dist-info", ".data")) or file.suffix != ".py":
                continue
            dotted = list(parts[:-1]) + ([] if file.stem == "__init__" else [file.stem])
            for end in range(1, len(dotted) + 1):
                modules.add(".".join(dotted[:end]))
    return modules


def test_every_module_the_steps_import_comes_from_a_package_of_the_spec():
    _, pip = spec_pins()
    provided = modules_from({_normalized(p.split("==")[0]) for p in pip})
    groups = step_imports()
    assert ("mlflow",) in groups and ("azure.ai.ml",) in groups  # the scan sees lazy imports
    missing = [g for g in groups if not any(name in provided for name in g)]
    assert missing == [], f"imported by steps/ but installed by no package of conda.yaml: {missing}"


def test_every_package_of_the_spec_is_pinned():
    conda, pip = spec_pins()
    assert all(re.fullmatch(r"[a-z0-9-]+=\d+(\.\d+)+", d) for d in conda), conda
    assert [p for p in pip if not PIN.match(p)] == []
    names = [_normalized(p.split("==")[0]) for p in pip]
    assert len(names) == len(set(names)), "a package is listed twice"


def test_the_direct_pins_are_the_ones_locked():
    """requirements.in (why each is there) and conda.yaml (the lock) agree: the lock
    was regenerated (`make lock-steps`) after the last change of a direct pin."""
    _, pip = spec_pins()
    locked = {_normalized(p.split("==")[0]): p.split("==")[1] for p in pip}
    for line in (ENVIRONMENT / "requirements.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert locked.get(_normalized(name)) == version.strip(), line


def test_every_component_runs_on_the_environment_s_dated_image():
    image = yaml.safe_load((ENVIRONMENT / "environment.yaml").read_text())["image"]
    assert DATED_IMAGE.match(image), f"{image}: pin the base image by a dated tag"
    components = sorted((REPO / "pipeline" / "components").glob("*.yaml"))
    assert components
    for path in components:
        environment = yaml.safe_load(path.read_text())["environment"]
        assert environment["image"] == image, path.name
        assert (path.parent / environment["conda_file"]).resolve() == ENVIRONMENT / "conda.yaml"


@pytest.mark.slow
def test_the_spec_builds_and_every_step_import_works_there(step_python):
    script = (
        "import importlib, json, sys\n"
        "failed = []\n"
        "for group in json.loads(sys.argv[1]):\n"
        "    errors = []\n"
        "    for name in group:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "            break\n"
        "        except Exception as exc:\n"
        "            errors.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "    else:\n"
        "        failed.append(errors)\n"
        "print(json.dumps(failed))\n"
    )
    groups = step_imports()
    done = subprocess.run(
        [step_python, "-c", script, json.dumps(groups)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    # The workspace's tracking plugin is there, and pip finds nothing inconsistent.
    plugin = subprocess.run([step_python, "-c", "import azureml.mlflow"], capture_output=True)
    assert plugin.returncode == 0, plugin.stderr.decode()[-2000:]
    check = subprocess.run([step_python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
