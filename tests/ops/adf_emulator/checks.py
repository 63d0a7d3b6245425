"""What Data Factory (or a reader) would refuse in a factory's JSON, checked without
running it: duplicate activity names, a dependsOn on no sibling or with a bad
condition, cycles, unknown activity types, expressions that read an undefined
parameter or variable or the output of an activity that has not run before, and
references to undefined linked services, datasets or pipelines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .engine import ACTIVITY_TYPES, CONTAINERS, DEPENDENCY_CONDITIONS, Factory
from .expressions import expressions_in, references


def nested(
    activities: list[dict], container: str | None = None
) -> Iterator[tuple[dict, list[dict], str | None]]:
    """(activity, its sibling list, the name of the container it is in) for every activity."""
    for activity in activities:
        yield activity, activities, container
        for key in CONTAINERS.get(activity["type"], ()):
            yield from nested(activity["typeProperties"].get(key, []), activity["name"])


def check_pipeline(name: str, factory: Factory) -> list[str]:
    """What Data Factory (or a reader) would refuse in a pipeline: duplicate names, a
    dependsOn on no sibling or with a bad condition, cycles, unknown activity types, an
    expression reading an undefined parameter or variable, or an activity's output that
    has not run before it, and references to undefined linked services or datasets."""
    pipeline = factory.pipelines[name]
    problems: list[str] = []
    everything = list(nested(pipeline["activities"]))
    names = [a["name"] for a, _, _ in everything]
    problems += [
        f"{name}: activity name {n} is used twice" for n in {n for n in names if names.count(n) > 1}
    ]
    parent = {a["name"]: container for a, _, container in everything}
    by_name = {a["name"]: a for a, _, _ in everything}

    for activity, siblings, _ in everything:
        where = f"{name}.{activity['name']}"
        if activity["type"] not in ACTIVITY_TYPES:
            problems.append(f"{where}: type {activity['type']} is not one the emulator runs")
        sibling_names = {s["name"] for s in siblings}
        for dep in activity.get("dependsOn", []):
            if dep["activity"] not in sibling_names or dep["activity"] == activity["name"]:
                problems.append(f"{where}: dependsOn {dep['activity']} is not a sibling activity")
            bad = set(dep.get("dependencyConditions", [])) - DEPENDENCY_CONDITIONS
            if bad or not dep.get("dependencyConditions"):
                problems.append(
                    f"{where}: dependsOn {dep['activity']} has conditions {sorted(bad) or 'none'}"
                )
    for activity, siblings, _ in everything:
        if _in_cycle(activity["name"], {s["name"]: s for s in siblings}):
            problems.append(f"{name}.{activity['name']}: dependsOn cycle")
    if problems:
        return problems

    def upstream(activity_name: str) -> set[str]:
        """The activities whose output this one may read: its dependsOn closure among
        siblings, and the same for each container it is in. What is nested inside an
        ancestor is not an ancestor (ADF: "The output of activity 'X' can't be
        referenced since it is either not an ancestor to the current activity or does
        not exist")."""
        seen: set[str] = set()
        current: str | None = activity_name
        while current is not None:
            stack = [d["activity"] for d in by_name[current].get("dependsOn", [])]
            while stack:
                dep = stack.pop()
                if dep not in seen:
                    seen.add(dep)
                    stack.extend(d["activity"] for d in by_name[dep].get("dependsOn", []))
            current = parent[current]
        return seen

    declared_vars = set(pipeline.get("variables", {}))
    declared_params = set(pipeline.get("parameters", {}))
    for activity, _, _ in everything:
        where = f"{name}.{activity['name']}"
        visible = upstream(activity["name"])
        own = {k: v for k, v in activity.items() if k not in CONTAINERS.get(activity["type"], ())}
        props = activity.get("typeProperties", {})
        own_props = {
            k: v for k, v in props.items() if k not in CONTAINERS.get(activity["type"], ())
        }
        if activity["type"] == "Until":
            # The loop's expression is evaluated after each pass: it may read the inner activities.
            visible = visible | {n for n, _ in _descendants(activity)}
        for text in expressions_in({**own, "typeProperties": own_props}):
            for kind, ref in references(text):
                if kind == "parameter" and ref not in declared_params:
                    problems.append(f"{where}: pipeline().parameters.{ref} is not a parameter")
                elif kind == "variable" and ref not in declared_vars:
                    problems.append(f"{where}: variables('{ref}') is not declared")
                elif kind == "activity" and ref not in visible:
                    problems.append(f"{where}: reads activity('{ref}') which has not run before it")
        if activity["type"] == "SetVariable":
            var = props["variableName"]
            if props.get("setSystemVariable") and var != "pipelineReturnValue":
                problems.append(f"{where}: system variable {var} does not exist")
            elif not props.get("setSystemVariable") and var not in declared_vars:
                problems.append(f"{where}: sets undeclared variable {var}")
        for ref in _refs(activity, "LinkedServiceReference"):
            if ref not in factory.linked_services:
                problems.append(f"{where}: linked service {ref} is not defined")
        for ref in _refs(activity, "DatasetReference"):
            if ref not in factory.datasets:
                problems.append(f"{where}: dataset {ref} is not defined")
    return problems


def check_factory(factory: Factory) -> list[str]:
    """Linked services, datasets and triggers: every reference resolves, Key Vault
    secrets are read through an AzureKeyVault linked service, dataset expressions read
    declared dataset parameters, triggers pass declared pipeline parameters."""
    problems: list[str] = []
    for name, service in factory.linked_services.items():
        for secret in _find(service, lambda v: v.get("type") == "AzureKeyVaultSecret"):
            store = secret.get("store", {}).get("referenceName")
            if factory.linked_services.get(store, {}).get("type") != "AzureKeyVault":
                secret_name = secret.get("secretName")
                problems.append(
                    f"{name}: secret {secret_name} has no AzureKeyVault store ({store})"
                )
    for name, dataset in factory.datasets.items():
        store = dataset["linkedServiceName"]["referenceName"]
        if store not in factory.linked_services:
            problems.append(f"{name}: linked service {store} is not defined")
        for text in expressions_in(dataset["typeProperties"]):
            for kind, ref in references(text):
                if kind != "dataset_parameter" or ref not in dataset.get("parameters", {}):
                    problems.append(
                        f"{name}: expression reads {kind} {ref}, not a dataset parameter"
                    )
    for pipeline in factory.pipelines.values():
        for activity, _, _ in nested(pipeline["activities"]):
            ref = activity.get("typeProperties", {}).get("dataset")
            if ref and ref["referenceName"] in factory.datasets:
                wanted = set(factory.datasets[ref["referenceName"]].get("parameters", {}))
                given = sorted(ref.get("parameters", {}))
                if set(given) != wanted:
                    problems.append(
                        f"{activity['name']}: dataset parameters {given} != {sorted(wanted)}"
                    )
    for name, trigger in factory.triggers.items():
        for entry in trigger["pipelines"]:
            target = entry["pipelineReference"]["referenceName"]
            if target not in factory.pipelines:
                problems.append(f"{name}: pipeline {target} is not defined")
                continue
            declared = factory.pipelines[target].get("parameters", {})
            given = entry.get("parameters", {})
            problems += [
                f"{name}: {p} is not a parameter of {target}" for p in set(given) - set(declared)
            ]
            problems += [
                f"{name}: required parameter {p} of {target} is not given"
                for p, spec in declared.items()
                if "defaultValue" not in spec and p not in given
            ]
    return problems


def _descendants(activity: dict) -> Iterator[tuple[str, dict]]:
    for key in CONTAINERS.get(activity["type"], ()):
        for inner, _, _ in nested(activity["typeProperties"].get(key, [])):
            yield inner["name"], inner


def _in_cycle(start: str, siblings: dict[str, dict]) -> bool:
    stack, seen = [d["activity"] for d in siblings[start].get("dependsOn", [])], set()
    while stack:
        current = stack.pop()
        if current == start:
            return True
        if current in seen or current not in siblings:
            continue
        seen.add(current)
        stack.extend(d["activity"] for d in siblings[current].get("dependsOn", []))
    return False


def _find(value: Any, predicate) -> Iterator[dict]:
    if isinstance(value, dict):
        if predicate(value):
            yield value
        for item in value.values():
            yield from _find(item, predicate)
    elif isinstance(value, list):
        for item in value:
            yield from _find(item, predicate)


def _refs(activity: dict, kind: str) -> Iterator[str]:
    own = {k: v for k, v in activity.items() if k != "typeProperties"}
    props = {
        k: v
        for k, v in activity.get("typeProperties", {}).items()
        if k not in CONTAINERS.get(activity["type"], ())
    }
    for ref in _find({**own, **props}, lambda v: v.get("type") == kind):
        yield ref["referenceName"]
