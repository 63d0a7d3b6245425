"""Training baselines, each run as its own process like the train step is:

  lightgbm  a bare `lightgbm.train` on the same Parquet, loaded the same way, with the
            same parameters (steps.train.lightgbm_params) for as many rounds as the
            step trained: what the train step costs over the library itself (MLflow
            logging, model saving, its imports).
  sklearn   scikit-learn's HistGradientBoostingClassifier on the same splits, same
            leaves / learning rate / min leaf / L2, for as many rounds as LightGBM used.

Prints one JSON line: wall seconds (process start to end, imports included), fit
seconds, peak RSS, test AUC.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

STARTED = time.perf_counter()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_lightgbm(prepared, rounds: int | None, threads: int | None = None) -> dict:
    """The step's own data loading and parameters, `rounds` boosting rounds (the
    number the step trained, so both do the same work), nothing else."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    from steps.params import TrainParams
    from steps.prepared import load_dataset, load_split
    from steps.train import lightgbm_params

    dataset = load_dataset(prepared)
    params = TrainParams() if threads is None else TrainParams(num_threads=threads)
    x_train, y_train = load_split(prepared, "train", dataset)
    x_valid, y_valid = load_split(prepared, "valid", dataset)
    config = lightgbm_params(params, int(y_train.sum()), int(len(y_train) - y_train.sum()))
    categorical = dataset.categorical_features() or "auto"
    kwargs = {"feature_name": dataset.features, "categorical_feature": categorical}
    train_set = lgb.Dataset(x_train, label=y_train, **kwargs)
    valid_set = lgb.Dataset(x_valid, label=y_valid, reference=train_set, **kwargs)
    callbacks = [] if rounds else [lgb.early_stopping(params.early_stopping_rounds, verbose=False)]
    t0 = time.perf_counter()
    booster = lgb.train(
        config,
        train_set,
        num_boost_round=rounds or params.num_boost_round,
        valid_sets=[valid_set],
        callbacks=callbacks,
    )
    fit = time.perf_counter() - t0
    x_test, y_test = load_split(prepared, "test", dataset)
    auc = roc_auc_score(y_test, booster.predict(x_test))
    return {"fit_s": fit, "rounds": booster.current_iteration(), "test_auc": auc}


def sklearn_hgb(prepared, rounds: int) -> dict:
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from steps.params import TrainParams
    from steps.prepared import load_dataset, split_path

    dataset = load_dataset(prepared)
    target = dataset.config.target_column
    train = pd.read_parquet(split_path(prepared, "train"))
    test = pd.read_parquet(split_path(prepared, "test"))
    params = TrainParams()
    categorical = set(dataset.categorical_features())
    mask = [name in categorical for name in dataset.features]
    model = HistGradientBoostingClassifier(
        learning_rate=params.learning_rate,
        max_iter=rounds,
        max_leaf_nodes=params.num_leaves,
        min_samples_leaf=params.min_data_in_leaf,
        l2_regularization=params.lambda_l2,
        categorical_features=mask if any(mask) else None,
        early_stopping=False,
        random_state=params.seed,
    )
    t0 = time.perf_counter()
    model.fit(train[dataset.features], train[target])
    fit = time.perf_counter() - t0
    auc = roc_auc_score(test[target], model.predict_proba(test[dataset.features])[:, 1])
    return {"fit_s": fit, "rounds": rounds, "test_auc": auc}


def main() -> None:
    from pathlib import Path

    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["lightgbm", "sklearn"])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--num-threads", type=int, default=None, help="lightgbm only")
    args = parser.parse_args()
    if args.which == "lightgbm":
        result = bare_lightgbm(args.prepared, args.rounds, args.num_threads)
    else:
        result = sklearn_hgb(args.prepared, args.rounds or 100)
    result.update(wall_s=time.perf_counter() - STARTED, peak_rss_mb=_peak_rss_mb())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
