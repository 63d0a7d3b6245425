"""A small emulator of Azure Data Factory, for integrations/data-factory/: its
expression language (expressions.py), pipeline runs (engine.py), the checks of a
factory's JSON without running it (checks.py) and against the REST API's models
(schema.py). Data Factory cannot be installed or reached here; see engine.py for what
is emulated and what is not."""

from .checks import check_factory, check_pipeline, nested
from .engine import ActivityRun, Environment, Factory, PipelineRun
from .expressions import ActivityError, Evaluator, Unsupported, parse, references

__all__ = [
    "ActivityError",
    "ActivityRun",
    "Environment",
    "Evaluator",
    "Factory",
    "PipelineRun",
    "Unsupported",
    "check_factory",
    "check_pipeline",
    "nested",
    "parse",
    "references",
]
