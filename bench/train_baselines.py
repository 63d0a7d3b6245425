"""Training baselines, each run as its own process like the train step is:

  lightgbm  a bare `lightgbm.train` on the same Parquet with the same parameters
            (steps.train.lightgbm_params) and the same early stopping: what the train
            step costs over the library itself (MLflow logging, model saving, imports).
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


def bare_lightgbm(prepared, rounds: int | None) -> dict:
    import lightgbm as lgb
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from steps.params import TrainParams
    from steps.prepared import load_dataset, split_path
    from steps.train import lightgbm_params

    dataset = load_dataset(prepared)
    target = dataset.config.target_column
    frames = {s: pd.read_parquet(split_path(prepared, s)) for s in ("train", "valid", "test")}
    params = TrainParams()
    y = frames["train"][target]
    config = lightgbm_params(params, int(y.sum()), int(len(y) - y.sum()))
    categorical = dataset.categorical_features() or "auto"
    train_set = lgb.Dataset(
        frames["train"][dataset.features], label=y, categorical_feature=categorical
    )
    valid_set = lgb.Dataset(
        frames["valid"][dataset.features], label=frames["valid"][target], reference=train_set
    )
    callbacks = [lgb.early_stopping(params.early_stopping_rounds, verbose=False)]
    t0 = time.perf_counter()
    booster = lgb.train(
        config,
        train_set,
        num_boost_round=rounds or params.num_boost_round,
        valid_sets=[valid_set],
        callbacks=callbacks if not rounds else [],
    )
    fit = time.perf_counter() - t0
    test = frames["test"]
    auc = roc_auc_score(test[target], booster.predict(test[dataset.features]))
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
    args = parser.parse_args()
    if args.which == "lightgbm":
        result = bare_lightgbm(args.prepared, args.rounds)
    else:
        result = sklearn_hgb(args.prepared, args.rounds or 100)
    result.update(wall_s=time.perf_counter() - STARTED, peak_rss_mb=_peak_rss_mb())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
