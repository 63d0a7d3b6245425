"""Where MLflow writes: the tracking store, the experiment, its artifact root.

With a sqlite tracking URI MLflow's default artifact root is `./mlruns` of the
current directory, which scatters models over whatever folder a step ran in. The
experiment is therefore created with its artifacts in `artifacts/` beside the
database. On Azure ML the workspace sets MLFLOW_TRACKING_URI and owns the
artifact store, so nothing is changed there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

DEFAULT_EXPERIMENT = "aml-trigger"


def quiet_mlflow() -> None:
    """Keep step logs readable: no progress bars, no migration chatter, no advice."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import mlflow  # noqa: F401  (it configures its loggers on import; override after)

    for name in ("mlflow", "alembic", "sqlalchemy", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")


def local_tracking_uri() -> str:
    """The embedded default's store, for a step run by hand without the executor."""
    home = Path(os.environ.get("AML_TRIGGER_HOME") or ".local").resolve()
    return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def configure_tracking() -> str:
    """Point MLflow at the store and the experiment; returns the experiment id."""
    quiet_mlflow()
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ["MLFLOW_REGISTRY_URI"])
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    db = sqlite_path(uri)
    if db is None:
        return mlflow.set_experiment(name).experiment_id
    db.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(db.with_name(db.name + ".lock")):
        # Train and score_champion start together; the first one creates the schema.
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            artifacts = db.parent / "artifacts"
            artifacts.mkdir(parents=True, exist_ok=True)
            experiment_id = client.create_experiment(name, artifact_location=artifacts.as_uri())
        else:
            experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def configure_registry() -> None:
    """For steps that only read or write the model registry (no experiment needed)."""
    quiet_mlflow()
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    registry = os.environ.get("MLFLOW_REGISTRY_URI") or uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    db = sqlite_path(registry)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(db.with_name(db.name + ".lock")):
            mlflow.MlflowClient().search_registered_models(max_results=1)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: sqlite's own locking is all there is
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
