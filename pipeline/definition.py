"""The pipeline definition as the local executor sees it, read from the Azure ML YAML.

`pipeline/training_pipeline.yaml` and `pipeline/components/*.yaml` are the only
definition of the pipeline. This module reads them with PyYAML (importing azure-ai-ml
costs over a second) and does the two things Azure ML does with them: resolve each
node's command template into an argument vector, and order the nodes by the bindings
`${{parent.jobs.<node>.outputs.<output>}}`.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PIPELINE_YAML = Path(__file__).resolve().parent / "training_pipeline.yaml"

_EXPR = re.compile(r"\$\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_OPTIONAL_BLOCK = re.compile(r"\$\[\[(.*?)\]\]", re.S)
_PARENT_INPUT = re.compile(r"^parent\.inputs\.([A-Za-z0-9_]+)$")
_JOB_OUTPUT = re.compile(r"^parent\.jobs\.([A-Za-z0-9_]+)\.outputs\.([A-Za-z0-9_]+)$")
_PATH_TYPES = {"uri_folder", "uri_file", "mltable", "custom_model", "mlflow_model"}


class DefinitionError(ValueError):
    """The YAML, or the inputs given for it, do not make a runnable pipeline."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    type: str
    default: Any = None
    optional: bool = False
    min: float | None = None
    max: float | None = None
    enum: tuple[str, ...] | None = None

    @property
    def is_path(self) -> bool:
        return self.type in _PATH_TYPES

    def check(self, value: Any) -> None:
        """Raise DefinitionError naming the input when `value` is not acceptable."""
        if self.type == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            raise DefinitionError(f"input {self.name}: expected an integer, got {value!r}")
        if self.type == "number" and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise DefinitionError(f"input {self.name}: expected a number, got {value!r}")
        if self.enum is not None and str(value) not in self.enum:
            raise DefinitionError(
                f"input {self.name}: {value!r} is not one of {', '.join(self.enum)}"
            )
        if self.min is not None and value < self.min:
            raise DefinitionError(f"input {self.name}: {value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise DefinitionError(f"input {self.name}: {value!r} is above the maximum {self.max}")


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    display_name: str
    inputs: Mapping[str, InputSpec]
    outputs: tuple[str, ...]
    command: str
    path: Path


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a node input comes from: a pipeline input, another node's output, or a
    literal written in the pipeline YAML."""

    parent_input: str | None = None
    job: str | None = None
    output: str | None = None
    literal: Any = None


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    component: Component
    bindings: Mapping[str, Binding]

    @property
    def depends_on(self) -> tuple[str, ...]:
        jobs = {b.job for b in self.bindings.values() if b.job is not None}
        return tuple(sorted(jobs))


@dataclass(frozen=True)
class PipelineDefinition:
    name: str
    inputs: Mapping[str, InputSpec]
    nodes: Mapping[str, Node]  # in YAML order, which is a valid execution order
    path: Path
    _order: tuple[str, ...] = field(default=(), repr=False)

    def order(self) -> list[str]:
        """Node names in dependency order (YAML order among independent nodes)."""
        return list(self._order)

    def dependents(self, node: str) -> set[str]:
        """Every node that needs `node`'s outputs, directly or transitively."""
        found: set[str] = set()
        frontier = [node]
        while frontier:
            current = frontier.pop()
            for other in self.nodes.values():
                if current in other.depends_on and other.name not in found:
                    found.add(other.name)
                    frontier.append(other.name)
        return found

    def resolve_inputs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The pipeline inputs for a run: `given` plus defaults. Unknown names, missing
        required inputs and out-of-range values raise DefinitionError."""
        unknown = sorted(set(given) - set(self.inputs))
        if unknown:
            raise DefinitionError(
                f"unknown pipeline input(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(self.inputs)}"
            )
        resolved: dict[str, Any] = {}
        for name, spec in self.inputs.items():
            value = given.get(name, spec.default)
            if value is None:
                if not spec.optional:
                    raise DefinitionError(f"pipeline input {name} is required")
                continue
            spec.check(value)
            resolved[name] = value
        return resolved

    def node_inputs(
        self, node: str, inputs: Mapping[str, Any], outputs: Mapping[tuple[str, str], Path]
    ) -> dict[str, Any]:
        """The values of a node's inputs, given the pipeline inputs and the output
        folders of every node (`outputs[(node, output)]`). Absent optional inputs are
        left out."""
        values: dict[str, Any] = {}
        for name, binding in self.nodes[node].bindings.items():
            if binding.parent_input is not None:
                value = inputs.get(binding.parent_input)
            elif binding.job is not None:
                value = outputs[(binding.job, binding.output)]
            else:
                value = binding.literal
            if value is not None:
                values[name] = value
        for name, spec in self.nodes[node].component.inputs.items():
            if name not in values and spec.default is not None:
                values[name] = spec.default
        return values

    def argv(
        self,
        node: str,
        inputs: Mapping[str, Any],
        outputs: Mapping[tuple[str, str], Path],
        *,
        python: str | None = None,
    ) -> list[str]:
        """The argument vector of `node` (no shell involved)."""
        component = self.nodes[node].component
        values = self.node_inputs(node, inputs, outputs)
        missing = [n for n, s in component.inputs.items() if n not in values and not s.optional]
        if missing:
            raise DefinitionError(f"node {node}: no value for input(s) {', '.join(missing)}")
        out_paths = {out: outputs[(node, out)] for out in component.outputs}
        return resolve_command(
            component.command, values, out_paths, python=python or sys.executable
        )


def resolve_command(
    template: str,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    *,
    python: str = sys.executable,
) -> list[str]:
    """Azure ML's command substitution, done on tokens rather than through a shell.

    `$[[...]]` blocks are kept only when every input they mention has a value. The
    template is split like a POSIX shell would split it, then `${{inputs.x}}` and
    `${{outputs.y}}` are replaced inside each token, so a value with spaces stays one
    argument. A leading `python` becomes this interpreter.
    """

    def keep_block(match: re.Match[str]) -> str:
        body = match.group(1)
        for ref in _EXPR.findall(body):
            kind, _, name = ref.partition(".")
            if kind == "inputs" and inputs.get(name) is None:
                return ""
        return body

    text = _OPTIONAL_BLOCK.sub(keep_block, template)
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise DefinitionError(f"command {template!r} cannot be split: {exc}") from None

    def substitute(match: re.Match[str]) -> str:
        kind, _, name = match.group(1).partition(".")
        source = {"inputs": inputs, "outputs": outputs}.get(kind)
        if source is None or name not in source or source[name] is None:
            raise DefinitionError(
                f"command refers to ${{{{{match.group(1)}}}}}, which has no value"
            )
        return _literal(source[name])

    argv = [_EXPR.sub(substitute, token) for token in tokens]
    if argv and argv[0] == "python":
        argv[0] = python
    return argv


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def load_pipeline(path: Path | str = PIPELINE_YAML) -> PipelineDefinition:
    """Read a pipeline component YAML and the command components it references."""
    path = Path(path).resolve()
    doc = _read_yaml(path)
    if doc.get("type") != "pipeline":
        raise DefinitionError(f"{path}: expected `type: pipeline`, got {doc.get('type')!r}")
    inputs = _input_specs(doc.get("inputs") or {}, path)
    components: dict[Path, Component] = {}
    nodes: dict[str, Node] = {}
    for name, job in (doc.get("jobs") or {}).items():
        ref = job.get("component")
        if not isinstance(ref, str) or ref.startswith("azureml:"):
            raise DefinitionError(
                f"{path}: job {name}: component must be a relative YAML path, got {ref!r}"
            )
        comp_path = (path.parent / ref).resolve()
        if comp_path not in components:
            components[comp_path] = _load_component(comp_path)
        component = components[comp_path]
        bindings = {}
        for input_name, raw in (job.get("inputs") or {}).items():
            if input_name not in component.inputs:
                raise DefinitionError(
                    f"{path}: job {name} binds {input_name}, "
                    f"which {comp_path.name} does not declare"
                )
            bindings[input_name] = _binding(raw, inputs, path, name)
        nodes[name] = Node(name=name, component=component, bindings=bindings)
    order = _topological(nodes, path)
    for node in nodes.values():
        for binding in node.bindings.values():
            if (
                binding.job is not None
                and binding.output not in nodes[binding.job].component.outputs
            ):
                raise DefinitionError(
                    f"{path}: job {node.name} reads {binding.job}.outputs.{binding.output}, "
                    "which does not exist"
                )
    return PipelineDefinition(
        name=str(doc.get("name", path.stem)), inputs=inputs, nodes=nodes, path=path, _order=order
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise DefinitionError(f"{path}: expected a mapping at the top level")
    return doc


def _input_specs(raw: Mapping[str, Any], path: Path) -> dict[str, InputSpec]:
    specs = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or "type" not in spec:
            raise DefinitionError(f"{path}: input {name} needs a mapping with a `type`")
        enum = spec.get("enum")
        specs[name] = InputSpec(
            name=name,
            type=str(spec["type"]),
            default=spec.get("default"),
            optional=bool(spec.get("optional", False)),
            min=spec.get("min"),
            max=spec.get("max"),
            enum=tuple(str(e) for e in enum) if enum is not None else None,
        )
    return specs


def _load_component(path: Path) -> Component:
    doc = _read_yaml(path)
    if doc.get("type") != "command":
        raise DefinitionError(f"{path}: expected `type: command`, got {doc.get('type')!r}")
    command = doc.get("command")
    if not isinstance(command, str) or not command.strip():
        raise DefinitionError(f"{path}: `command` is missing")
    inputs = _input_specs(doc.get("inputs") or {}, path)
    outputs = tuple((doc.get("outputs") or {}).keys())
    for ref in _EXPR.findall(command):
        kind, _, name = ref.partition(".")
        declared = inputs if kind == "inputs" else outputs if kind == "outputs" else ()
        if name not in declared:
            raise DefinitionError(f"{path}: command refers to undeclared {ref}")
    return Component(
        name=str(doc.get("name", path.stem)),
        display_name=str(doc.get("display_name", doc.get("name", path.stem))),
        inputs=inputs,
        outputs=outputs,
        command=command,
        path=path,
    )


def _binding(raw: Any, inputs: Mapping[str, InputSpec], path: Path, job: str) -> Binding:
    if not isinstance(raw, str):
        return Binding(literal=raw)
    whole = _EXPR.fullmatch(raw.strip())
    if whole is None:
        return Binding(literal=raw)
    expr = whole.group(1)
    if m := _PARENT_INPUT.match(expr):
        if m.group(1) not in inputs:
            raise DefinitionError(f"{path}: job {job} reads undeclared pipeline input {expr}")
        return Binding(parent_input=m.group(1))
    if m := _JOB_OUTPUT.match(expr):
        return Binding(job=m.group(1), output=m.group(2))
    raise DefinitionError(f"{path}: job {job}: unsupported binding {raw!r}")


def _topological(nodes: Mapping[str, Node], path: Path) -> tuple[str, ...]:
    for node in nodes.values():
        for dep in node.depends_on:
            if dep not in nodes:
                raise DefinitionError(f"{path}: job {node.name} depends on unknown job {dep}")
    done: list[str] = []
    remaining = list(nodes)
    while remaining:
        ready = [n for n in remaining if all(d in done for d in nodes[n].depends_on)]
        if not ready:
            raise DefinitionError(f"{path}: jobs {', '.join(remaining)} form a cycle")
        done.extend(ready)
        remaining = [n for n in remaining if n not in ready]
    return tuple(done)
