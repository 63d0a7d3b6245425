"""check_drift: is this data drop worth a retrain?

Runs right after prep. It compares the prepared data with the profile of the data
the current champion was trained on (train logs prep's profile.json with the run
as `training_profile.json`; the champion's model version names that run): the
population stability index (PSI) of every feature in the champion's own bins, the
PSI and the rate of the target, and how many rows are new. A retraining policy
then decides `retrain` or `skip`, and summary.json says which and why, with the
figures.

A skip is not a failure: train, score_champion, evaluate, register, deploy and
smoke_test read the decision (through their inputs, as on Azure ML), do no work,
and write summaries saying they skipped, so the run completes and its record
carries the reason. With no champion, or a champion whose training profile cannot
be read, the decision is always `retrain`: there is nothing to compare with.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps._cli import StepParser, read_json, run_step, unset_text, validated, write_json
from steps.params import RetrainPolicy

if TYPE_CHECKING:
    import numpy as np

    from steps.dataset import ResolvedDataset

PROFILE_ARTIFACT = "training_profile.json"
# Shares below this are raised to it, so an empty bin gives a large but finite PSI.
_SHARE_FLOOR = 1e-4
_SUMMARY = "summary.json"


# -- PSI (pure) ---------------------------------------------------------------------


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins:
    sum((a - e) * ln(a / e)); 0 for identical shares, about 0.1 for a modest shift,
    0.2 and more for a large one."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs the same bins: {len(expected)} vs {len(actual)} shares")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(float(e), _SHARE_FLOOR), max(float(a), _SHARE_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def reference_shares(feature: Mapping[str, Any]) -> list[float]:
    """A feature's training distribution from its profile entry, as shares of all
    rows: [missing, bin 1..k] for numeric, [missing, top values..., other] otherwise."""
    missing = float(feature.get("missing_rate", 0.0))
    if feature["type"] == "numeric":
        bins = feature.get("bins")
        if not bins:  # every value was missing
            return [missing, 1.0 - missing]
        return [missing, *((1.0 - missing) * float(s) for s in bins["shares"])]
    top = [float(v["share"]) for v in feature.get("top_values", [])]
    if not top:
        return [missing, 1.0 - missing]
    return [missing, *top, float(feature.get("other_share", 0.0))]


def observed_shares(
    values: np.ndarray,
    feature: Mapping[str, Any],
    *,
    categories: Sequence[str] | None = None,
) -> list[float]:
    """The new values' shares in the bins `reference_shares` uses for `feature`.
    `categories` are the new data's labels of a text categorical (codes index them);
    the profile's `categories` are the champion's, so the two meet on labels."""
    import numpy as np

    total = len(values)
    if total == 0:
        raise ValueError("no rows to compare")
    present = values[~np.isnan(values)]
    missing = 1.0 - len(present) / total
    if feature["type"] == "numeric":
        bins = feature.get("bins")
        if not bins:
            return [missing, 1.0 - missing]
        edges = bins["edges"]
        # The champion's bins, open at both ends: [e0, e1) ... [e(k-1), inf), with
        # anything below e0 in the first bin (np.histogram's bins for in-range values).
        index = np.searchsorted(np.asarray(edges[1:-1], dtype="float64"), present, side="right")
        counts = np.bincount(index, minlength=max(1, len(edges) - 1))
        return [missing, *(counts / total).tolist()]
    top = feature.get("top_values", [])
    if not top:
        return [missing, 1.0 - missing]
    codes, counts = np.unique(present.astype("int64"), return_counts=True)
    by_label = {_label(int(c), categories): int(n) for c, n in zip(codes, counts, strict=True)}
    old_labels = feature.get("categories")
    top_counts = [by_label.get(_label(int(v["value"]), old_labels), 0) for v in top]
    other = len(present) - sum(top_counts)
    return [missing, *(n / total for n in top_counts), other / total]


def _label(code: int, categories: Sequence[str] | None) -> str:
    if categories is not None and 0 <= code < len(categories):
        return str(categories[code])
    return str(code)


def target_psi(rate_old: float, rate_new: float) -> float:
    return psi([1.0 - rate_old, rate_old], [1.0 - rate_new, rate_new])


# -- the policy (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class DriftFigures:
    """What was measured between the champion's training data and this drop."""

    psi: dict[str, float]
    target_psi: float
    target_rate_old: float
    target_rate_new: float
    rows_old: int
    rows_new: int
    same_location: bool
    schema_changes: tuple[str, ...] = field(default=())

    @property
    def new_rows(self) -> int:
        """A drop read from the champion's own location is that data grown: only the
        rows beyond the champion's count are new. Any other location is all new."""
        return max(0, self.rows_new - self.rows_old) if self.same_location else self.rows_new

    @property
    def max_psi(self) -> tuple[float, str]:
        """(largest PSI, what it belongs to: a feature name or 'target')."""
        worst = max(self.psi.items(), key=lambda kv: kv[1], default=("target", 0.0))
        return (self.target_psi, "target") if self.target_psi > worst[1] else (worst[1], worst[0])


@dataclass(frozen=True)
class RetrainDecision:
    decision: str  # "retrain" or "skip"
    reason: str

    @property
    def skip(self) -> bool:
        return self.decision == "skip"


def decide(
    policy: RetrainPolicy,
    figures: DriftFigures | None,
    *,
    champion_version: str | None,
    note: str | None = None,
) -> RetrainDecision:
    """Apply the policy. `figures` is None when there is nothing to compare with (no
    champion, or its training profile could not be read: `note` says why)."""
    if champion_version is None:
        return RetrainDecision("retrain", "no champion yet: nothing to compare with, retraining")
    if figures is None:
        why = note or "its training profile is not available"
        return RetrainDecision(
            "retrain", f"cannot compare with champion v{champion_version} ({why}); retraining"
        )
    if figures.schema_changes:
        return RetrainDecision(
            "retrain",
            "the columns changed since the champion: " + "; ".join(figures.schema_changes),
        )
    value, name = figures.max_psi
    of = "the target" if name == "target" else name
    threshold = policy.drift_psi_threshold
    if policy.retrain_policy == "always":
        return RetrainDecision(
            "retrain", f"policy always (max PSI {value:.2f} on {of}; threshold {threshold:.2f})"
        )
    if policy.retrain_policy == "on_drift":
        shown = _shown(value, threshold)
        if value >= threshold:
            return RetrainDecision("retrain", f"drift (max PSI {shown} on {of} >= {threshold:.2f})")
        return RetrainDecision("skip", f"no drift (max PSI {shown} < {threshold:.2f})")
    rows, needed = figures.new_rows, policy.min_new_rows
    counted = " beyond the champion's" if figures.same_location else ""
    if rows >= needed:
        return RetrainDecision("retrain", f"{rows:,} new rows{counted} >= {needed:,}")
    return RetrainDecision("skip", f"too few new rows ({rows:,}{counted} < {needed:,})")


def _shown(value: float, threshold: float) -> str:
    """Two decimals, or as many as it takes not to print `0.20 < 0.20`."""
    for digits in (2, 3, 4):
        if value >= threshold or f"{value:.{digits}f}" != f"{threshold:.{digits}f}":
            return f"{value:.{digits}f}"
    return f"{value:.6f}"


# -- reading the data and the champion ------------------------------------------------


def measure(prepared: Path, reference: Mapping[str, Any], *, same_location: bool) -> DriftFigures:
    """PSI of every feature the champion was trained on, in the champion's bins."""
    from steps.prepared import PROFILE_FILE, load_dataset

    dataset = load_dataset(prepared)
    profile = read_json(prepared / PROFILE_FILE, what="prepared data")
    old_features: Mapping[str, Any] = reference.get("features") or {}
    changes = []
    missing = [f for f in old_features if f not in dataset.features]
    if missing:
        changes.append(f"missing feature(s) {_names(missing)}")
    added = [f for f in dataset.features if f not in old_features]
    if added:
        changes.append(f"new feature(s) {_names(added)}")
    compared = [f for f in dataset.features if f in old_features]
    retyped = [f for f in compared if old_features[f]["type"] != dataset.types[f]]
    if retyped:
        changes.append(
            "type changed: "
            + ", ".join(f"{f} {old_features[f]['type']} -> {dataset.types[f]}" for f in retyped[:5])
        )
    values: dict[str, float] = {}
    for name, column in _columns(prepared, dataset, [f for f in compared if f not in retyped]):
        expected = reference_shares(old_features[name])
        actual = observed_shares(
            column, old_features[name], categories=dataset.categories.get(name)
        )
        values[name] = round(psi(expected, actual), 6)
    rate_old = float(reference.get("positive_rate") or 0.0)
    rate_new = float(profile.get("positive_rate") or 0.0)
    return DriftFigures(
        psi=values,
        target_psi=round(target_psi(rate_old, rate_new), 6),
        target_rate_old=rate_old,
        target_rate_new=rate_new,
        rows_old=int(reference.get("rows") or 0),
        rows_new=int(profile.get("rows") or 0),
        same_location=same_location,
        schema_changes=tuple(changes),
    )


def _names(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")


def _columns(
    prepared: Path, dataset: ResolvedDataset, names: list[str]
) -> Iterator[tuple[str, np.ndarray]]:
    """Each feature over all rows of the drop (train+valid+test, as prep profiled
    them), one column in memory at a time."""
    import numpy as np
    import pyarrow.parquet as pq

    from steps.prepared import SPLITS, split_path

    files = [pq.ParquetFile(split_path(prepared, s)) for s in SPLITS]
    for name in names:
        parts = [f.read(columns=[name]).column(0).to_numpy() for f in files]
        yield name, np.concatenate(parts).astype("float64")


@dataclass
class Champion:
    version: str | None
    profile: dict[str, Any] | None = None
    data_location: str | None = None
    note: str | None = None


def load_champion(model_name: str) -> Champion:
    """The champion's version, lineage and training profile (None with a note when
    the profile cannot be had: an older model, a deleted run, a broken file)."""
    from steps.champion import artifact_uri, current_champion
    from steps.tracking import configure_registry

    configure_registry()
    import mlflow

    client = mlflow.MlflowClient()
    version = current_champion(client, model_name)
    if version is None:
        return Champion(None)
    details = client.get_model_version(model_name, version)
    champion = Champion(version, data_location=(details.tags or {}).get("data_location"))
    if not details.run_id:
        champion.note = "its model version names no training run"
        return champion
    try:
        with tempfile.TemporaryDirectory(prefix="aml-trigger-profile-") as tmp:
            # From the run's artifact root, not runs:/ (see steps/champion.artifact_uri).
            source = artifact_uri(client, f"runs:/{details.run_id}/{PROFILE_ARTIFACT}")
            path = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp)
            champion.profile = read_json(Path(path), what="champion training profile")
    except Exception as exc:  # noqa: BLE001 - a missing profile means "retrain", not a failure
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        champion.note = (
            f"run {details.run_id} has no readable {PROFILE_ARTIFACT} ({first[:200]}); "
            "models trained before drift checks have none"
        )
    return champion


def check_drift(
    prepared: Path, model_name: str, data_location: str, policy: RetrainPolicy, out: Path
) -> dict[str, Any]:
    champion = load_champion(model_name)
    figures = None
    if champion.profile is not None:
        same = bool(data_location) and champion.data_location == data_location
        figures = measure(prepared, champion.profile, same_location=same)
    decision = decide(policy, figures, champion_version=champion.version, note=champion.note)
    tag_run(decision)
    summary = summarize(decision, figures, policy, champion)
    if figures is None:
        from steps.prepared import PROFILE_FILE

        profile = read_json(prepared / PROFILE_FILE, what="prepared data")
        summary.update(target_rate_new=profile.get("positive_rate"), new_rows=profile.get("rows"))
    write_json(out / _SUMMARY, summary)
    return summary


def summarize(
    decision: RetrainDecision,
    figures: DriftFigures | None,
    policy: RetrainPolicy,
    champion: Champion,
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "decision": decision.decision,
        "reason": decision.reason,
        "policy": policy.model_dump(),
        "champion_version": champion.version,
        "note": champion.note,
        "max_psi": None,
        "max_psi_feature": None,
        "target_psi": None,
        "target_rate_old": None,
        "target_rate_new": None,
        "rows_old": None,
        "new_rows": None,
        "schema_changes": [],
        "psi": {},
    }
    if figures is not None:
        value, name = figures.max_psi
        summary.update(
            max_psi=value,
            max_psi_feature=name,
            target_psi=figures.target_psi,
            target_rate_old=figures.target_rate_old,
            target_rate_new=figures.target_rate_new,
            rows_old=figures.rows_old,
            new_rows=figures.new_rows,
            schema_changes=list(figures.schema_changes),
            psi=dict(sorted(figures.psi.items(), key=lambda kv: -kv[1])),
        )
    return summary


def tag_run(decision: RetrainDecision) -> None:
    """Tag the step's own MLflow run with the decision, when the job gives it one: on
    Azure ML the runtime sets MLFLOW_RUN_ID to the step's child job
    (azure-sdk-for-python#38813), and the service reads these tags from the run history
    to start training only on `retrain` (pipeline/drift_probe.py holds the names).
    Locally no step has a run of its own, and the run record reads summary.json."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    import mlflow

    client = mlflow.MlflowClient()
    client.set_tag(run_id, "aml_trigger.drift_decision", decision.decision)
    client.set_tag(run_id, "aml_trigger.drift_reason", decision.reason[:500])


# -- for the steps after it -----------------------------------------------------------


def skip_reason(drift_dir: Path | None) -> str | None:
    """Why the steps after check_drift should do nothing, or None to go on. A step
    run without --drift (by hand, or by an older pipeline) always goes on."""
    if drift_dir is None:
        return None
    summary = read_json(drift_dir / _SUMMARY, what="check_drift output")
    if summary.get("decision") == "skip":
        return f"retraining skipped: {summary.get('reason')}"
    return None


# -- CLI ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.drift",
        description="Compare the prepared data with the champion's training data (PSI, "
        "target rate, new rows) and decide whether to retrain.",
    )
    parser.add_argument("--prepared", type=Path, required=True, help="prep's output folder.")
    parser.add_argument("--model-name", required=True, help="Registered model name.")
    parser.add_argument(
        "--data-location",
        default="",
        type=unset_text,
        help="Where the data came from (lineage tag); `none` = unknown.",
    )
    parser.add_argument("--retrain-policy", required=True, help="always, on_drift or min_new_rows.")
    parser.add_argument("--drift-psi-threshold", type=float, required=True, help="PSI threshold.")
    parser.add_argument("--min-new-rows", type=int, required=True, help="New rows needed.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder.")
    return parser


def _run(args: argparse.Namespace) -> None:
    policy = validated(
        RetrainPolicy,
        {
            "retrain_policy": args.retrain_policy,
            "drift_psi_threshold": args.drift_psi_threshold,
            "min_new_rows": args.min_new_rows,
        },
    )
    summary = check_drift(args.prepared, args.model_name, args.data_location, policy, args.out)
    print(f"check_drift: {summary['decision']}: {summary['reason']}", file=sys.stderr)
    for name, value in list(summary["psi"].items())[:5]:
        print(f"check_drift:   PSI {value:.4f} {name}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
