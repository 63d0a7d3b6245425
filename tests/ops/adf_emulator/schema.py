"""Data Factory JSON checked against the REST API's own models.

azure-mgmt-datafactory is generated from the Data Factory REST specification: each
activity, linked service, dataset and trigger type is a model class, selected by its
`type` discriminator, whose fields carry their REST names. Data Factory ignores or
refuses a property its API does not define (a misspelt `turnOfAsync` would silently
leave the async pattern on), so every key of the factory's JSON must be a field of the
model its position and `type` select, recursively. Only names and discriminators are
checked: values are mostly expressions, which the models type as Any.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator
from typing import Any

from azure.mgmt.datafactory import models
from azure.mgmt.datafactory._utils.model_base import Model

ROOTS = {
    "pipelines": models.Pipeline,
    "linkedservices": models.LinkedService,
    "datasets": models.Dataset,
    "triggers": models.Trigger,
}


def unknown_properties(data: dict, base: type[Model], path: str) -> Iterator[str]:
    """Each key under `data` that the REST API does not define where it stands."""
    cls = _concrete(base, data)
    if isinstance(data.get("type"), str) and next(_subclasses(cls), None) is not None:
        yield f"{path}: type {data['type']!r} is not a {base.__name__} type of the API"
        return
    cls.__new__(cls)  # the model base maps attributes to REST names on first construction
    fields = {field._rest_name: attr for attr, field in cls._attr_to_rest_field.items()}
    for key, value in data.items():
        if key not in fields:
            yield f"{path}.{key}: not a property of {cls.__name__}"
            continue
        for shape, sub in _model_classes(_annotation(cls, fields[key])):
            if shape == "one" and isinstance(value, dict):
                yield from unknown_properties(value, sub, f"{path}.{key}")
            elif shape == "list" and isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        yield from unknown_properties(item, sub, f"{path}.{key}[{i}]")
            elif shape == "dict" and isinstance(value, dict):
                for name, item in value.items():
                    if isinstance(item, dict):
                        yield from unknown_properties(item, sub, f"{path}.{key}.{name}")
            break


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _concrete(cls: type[Model], data: dict) -> type[Model]:
    """The class a discriminated base resolves to for this JSON's `type` (the SDK's
    hierarchy has intermediate bases, e.g. Activity > ControlActivity > Until)."""
    kind = data.get("type")
    if not isinstance(kind, str):
        return cls
    for sub in (cls, *_subclasses(cls)):
        mapping = sub.__dict__.get("__mapping__") or {}
        if kind in mapping and mapping[kind] is not sub:
            return _concrete(mapping[kind], data)
    return cls


def _annotation(cls: type, attr: str) -> Any:
    for klass in cls.__mro__:
        annotation = getattr(klass, "__annotations__", {}).get(attr)
        if annotation is not None:
            return _resolve(annotation, vars(sys.modules[klass.__module__]))
    return Any


def _resolve(annotation: Any, namespace: dict) -> Any:
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        try:
            return eval(
                annotation, {**namespace, "_models": models}
            )  # the SDK's own annotation strings
        except (NameError, AttributeError, SyntaxError):
            return Any
    return annotation


def _model_classes(annotation: Any) -> list[tuple[str, type[Model]]]:
    annotation = _resolve(annotation, vars(models))
    if isinstance(annotation, type) and issubclass(annotation, Model):
        return [("one", annotation)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args:
        return [("list", c) for _, c in _model_classes(args[0])]
    if origin is dict and len(args) == 2:
        return [("dict", c) for _, c in _model_classes(args[1])]
    if origin is typing.Union:
        return [pair for arg in args for pair in _model_classes(arg)]
    return []
