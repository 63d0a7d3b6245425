"""train: LightGBM (binary objective) on the prepared splits, tracked in MLflow.

Memory-lean on purpose (600k x 57 must stay well under 1.5 GB): the splits are
read straight into float32 matrices, LightGBM bins them, and the raw matrices are
released before boosting starts.

Cheap on purpose (the step aims at <= 1.2x a bare `lightgbm.train`): MLflow is
imported and its store opened in a thread while LightGBM (which releases the GIL)
trains; the model is saved once, to out/model, and that folder is uploaded as the
run's `model` artifacts, from which register creates the version (`runs:/<run>/model`).
Not `log_model`: in MLflow 3 it goes through the logged-models API, which an Azure
ML workspace answers 404 (azure-sdk-for-python#44896).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from steps._cli import StepError, StepParser, read_json, run_step, validated, write_json
from steps.candidates import parse_overrides
from steps.dataset import ResolvedDataset
from steps.drift import PROFILE_ARTIFACT, skip_reason
from steps.params import TrainParams
from steps.prepared import PROFILE_FILE, load_dataset, load_split

MODEL_DIR = "model"
DATASET_METADATA_KEY = "aml_trigger_dataset"
# What loading and scoring the model needs (score.py cleans with pydantic models); the
# step environment on Azure ML has MLflow as mlflow-skinny (what azureml-mlflow needs).
_MODEL_REQUIREMENTS = (
    ("mlflow", "mlflow-skinny"), ("lightgbm",), ("numpy",), ("scipy",), ("pandas",),
    ("pyarrow",), ("pydantic",),
)  # fmt: skip


def model_requirements() -> list[str]:
    """Pinned to what trained it. MLflow would otherwise infer them by loading the model
    in a subprocess, which costs ~5 s per save."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for names in _MODEL_REQUIREMENTS:
        for name in names:
            try:
                pins.append(f"{name}=={version(name)}")
                break
            except PackageNotFoundError:
                continue
        else:
            raise StepError(f"none of {', '.join(names)} is installed; the model needs it")
    return pins


def lightgbm_params(params: TrainParams, positives: int, negatives: int) -> dict[str, Any]:
    """TrainParams -> LightGBM's parameter dict (pure, so it is tested with plain values)."""
    out: dict[str, Any] = {
        "objective": "binary",
        "metric": "auc",
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": 1 if params.bagging_fraction < 1.0 else 0,
        "lambda_l2": params.lambda_l2,
        "seed": params.seed,
        "num_threads": params.num_threads,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    if params.class_weight == "balanced":
        out["scale_pos_weight"] = negatives / max(positives, 1)
    return out


def _progress(every: int):
    def callback(env) -> None:
        if env.iteration % every == 0 or env.iteration + 1 == env.end_iteration:
            scores = " ".join(
                f"{name} {metric} {value:.5f}"
                for name, metric, value, _ in env.evaluation_result_list
            )
            print(f"train: round {env.iteration + 1}/{env.end_iteration} {scores}", file=sys.stderr)

    return callback


def fit(prepared: Path, params: TrainParams):
    """(booster, dataset, valid AUC history, train seconds): no MLflow here."""
    import lightgbm as lgb

    dataset = load_dataset(prepared)
    x_train, y_train = load_split(prepared, "train", dataset)
    x_valid, y_valid = load_split(prepared, "valid", dataset)
    positives = int(y_train.sum())
    config = lightgbm_params(params, positives, len(y_train) - positives)
    categorical = dataset.categorical_features()
    train_set = lgb.Dataset(
        x_train,
        label=y_train,
        feature_name=dataset.features,
        categorical_feature=categorical or "auto",
        params={"verbosity": -1},
        free_raw_data=True,
    )
    valid_set = lgb.Dataset(
        x_valid,
        label=y_valid,
        reference=train_set,
        feature_name=dataset.features,
        categorical_feature=categorical or "auto",
        free_raw_data=True,
    )
    train_set.construct()
    valid_set.construct()
    del x_train, x_valid  # LightGBM keeps its binned copy; the raw floats can go
    history: dict[str, list[float]] = {}
    callbacks = [lgb.record_evaluation(history), _progress(50)]
    if params.early_stopping_rounds:
        callbacks.append(lgb.early_stopping(params.early_stopping_rounds, verbose=False))
    started = time.perf_counter()
    booster = lgb.train(
        config,
        train_set,
        num_boost_round=params.num_boost_round,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - started
    return booster, dataset, history.get("valid", {}).get("auc", []), seconds, config


def input_example(prepared: Path, dataset: ResolvedDataset):
    """A few complete validation rows (NaN does not survive MLflow's JSON example)."""
    from steps.prepared import load_split_frame

    frame, _ = load_split_frame(prepared, "valid", dataset, rows=2000)
    complete = frame.dropna()
    return (complete if len(complete) >= 3 else frame.fillna(0.0)).head(5)


def _open_tracking():
    """MLflow with the modules saving a model needs, pointed at the store (run in a
    thread beside the fit)."""
    from steps.tracking import configure_tracking

    configure_tracking()
    import mlflow
    import mlflow.lightgbm  # noqa: F401
    import mlflow.models  # noqa: F401

    return mlflow


def train(
    prepared: Path, params: TrainParams, out: Path, *, candidate: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fit, save the model under out/model once, log run and model to MLflow, write
    out/summary.json. `candidate` (slot, overrides) is kept in the summary and tagged
    on the MLflow run."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-import") as pool:
        tracking = pool.submit(_open_tracking)
        booster, dataset, auc_history, seconds, config = fit(prepared, params)
        mlflow = tracking.result()
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    best_iteration = int(booster.best_iteration or booster.current_iteration())
    valid_auc = float(auc_history[best_iteration - 1]) if auc_history else float("nan")
    example = input_example(prepared, dataset)
    signature = infer_signature(example, booster.predict(example, num_iteration=best_iteration))
    metadata = {DATASET_METADATA_KEY: dataset.model_dump(mode="json")}
    saved = {
        "signature": signature,
        "input_example": example,
        "metadata": metadata,
        "pip_requirements": model_requirements(),
    }
    model_dir = out / MODEL_DIR
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    mlflow.lightgbm.save_model(booster, path=model_dir, **saved)
    with mlflow.start_run() as run:
        mlflow.log_params({**params.model_dump(), **{f"lgb_{k}": v for k, v in config.items()}})
        if candidate is not None:
            mlflow.set_tags({"candidate_slot": candidate["slot"]})
        mlflow.log_params(
            {
                "features": len(dataset.features),
                "categorical_features": len(dataset.categorical_features()),
            }
        )
        # The validation curve (at most ~200 points) in one request, not one per point.
        now = int(time.time() * 1000)
        step = max(1, len(auc_history) // 200)
        curve = [
            Metric("valid_auc_curve", auc_history[index], now, index + 1)
            for index in range(0, len(auc_history), step)
        ]
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=curve)
        mlflow.log_metrics(
            {"valid_auc": valid_auc, "best_iteration": best_iteration, "train_seconds": seconds}
        )
        # The training data's profile goes with the run the model version names, so a
        # later check_drift can compare a new drop with what this model learned from.
        profile = read_json(prepared / PROFILE_FILE, what="prepared data")
        mlflow.log_dict(profile, PROFILE_ARTIFACT)
        mlflow.log_artifacts(str(model_dir), artifact_path=MODEL_DIR)
        summary = {
            "mlflow_run_id": run.info.run_id,
            "best_iteration": best_iteration,
            # Rounds boosted, early-stopping patience included (the returned booster
            # keeps only best_iteration trees, so current_iteration() would say less).
            "rounds_trained": len(auc_history) or int(booster.current_iteration()),
            "valid_auc": valid_auc,
            "train_seconds": round(seconds, 3),
            "model_uri": f"runs:/{run.info.run_id}/{MODEL_DIR}",
        }
        if candidate is not None:
            summary["candidate"] = candidate
    write_json(out / "summary.json", summary)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.train", description="Train a LightGBM binary classifier."
    )
    parser.add_argument("--prepared", type=Path, required=True, help="prep's output folder.")
    flags = {
        "learning_rate": float, "num_leaves": int, "num_boost_round": int,
        "early_stopping_rounds": int, "min_data_in_leaf": int, "feature_fraction": float,
        "bagging_fraction": float, "lambda_l2": float, "class_weight": str, "seed": int,
        "num_threads": int,
    }  # fmt: skip
    for name, kind in flags.items():
        field = TrainParams.model_fields[name]
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, type=kind, required=True,
            help=f"{field.description} (default in requests: {field.default})",
        )  # fmt: skip
    parser.add_argument(
        "--drift", type=Path, help="check_drift's output folder; a skip decision trains nothing."
    )
    parser.add_argument("--slot", type=int, default=0, help="Candidate slot (0-based).")
    parser.add_argument(
        "--candidate-count", type=int, default=1, help="Candidates in the run (1-4)."
    )
    parser.add_argument(
        "--overrides",
        default="",
        help="This slot's candidate, e.g. num_leaves=63,learning_rate=0.1",
    )
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def skipped_summary(reason: str) -> dict[str, Any]:
    """train's summary when check_drift decided not to retrain: no model, the reason."""
    return {"mlflow_run_id": None, "model_uri": None, "skipped_reason": reason}


def _run(args: argparse.Namespace) -> None:
    if args.slot >= args.candidate_count:
        # A train slot the run has no candidate for: done before any heavy import.
        write_json(args.out / "summary.json", unused_slot_summary(args.slot, args.candidate_count))
        print(f"train: slot {args.slot} unused ({args.candidate_count} candidate(s))",
              file=sys.stderr)  # fmt: skip
        return
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as exc:
        raise StepError(f"--overrides: {exc}") from None
    values = {name: getattr(args, name) for name in TrainParams.model_fields}
    params = validated(TrainParams, {**values, **overrides})
    skipped = skip_reason(args.drift)
    if skipped:
        write_json(args.out / "summary.json", skipped_summary(skipped))
        print(f"train: skipped: {skipped}", file=sys.stderr)
        return
    candidate = {"slot": args.slot, "overrides": overrides}
    summary = train(args.prepared, params, args.out, candidate=candidate)
    print(
        f"train: valid AUC {summary['valid_auc']:.4f} at round {summary['best_iteration']} "
        f"({summary['train_seconds']:.1f} s), run {summary['mlflow_run_id']}",
        file=sys.stderr,
    )


def unused_slot_summary(slot: int, count: int) -> dict[str, Any]:
    return {"skipped": True, "candidate": {"slot": slot}, "reason": f"{count} candidate(s)"}


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
