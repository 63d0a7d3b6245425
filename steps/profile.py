"""A data profile: enough per feature to compare two populations later (PSI, drift).

Numeric features keep summary statistics plus decile bin edges with the share of
rows in each bin (ties make shares unequal, so they are stored, not assumed);
categorical and binary features keep their most frequent values' shares.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from steps.dataset import ResolvedDataset

_QUANTILES = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
_TOP_VALUES = 20


def profile_frame(
    features: dict[str, np.ndarray], target: np.ndarray, dataset: ResolvedDataset
) -> dict[str, Any]:
    rows = int(len(target))
    out: dict[str, Any] = {
        "rows": rows,
        "positive_rate": float(target.mean()) if rows else None,
        "features": {},
    }
    for name in dataset.features:
        out["features"][name] = _profile_column(features[name], dataset.types[name])
        if name in dataset.categories:
            out["features"][name]["categories"] = dataset.categories[name]
    return out


def _profile_column(values: np.ndarray, kind: str) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    summary: dict[str, Any] = {
        "type": kind,
        "missing_rate": float(1 - len(present) / len(values)) if len(values) else 0.0,
    }
    if not len(present):
        return summary
    if kind == "numeric":
        as64 = present.astype("float64")
        quantiles = np.quantile(as64, _QUANTILES)
        edges = np.unique(np.quantile(as64, np.linspace(0, 1, 11)))
        counts = np.histogram(as64, bins=edges)[0] if len(edges) > 1 else np.array([len(as64)])
        summary.update(
            mean=float(as64.mean()),
            std=float(as64.std()),
            quantiles={f"{q:g}": float(v) for q, v in zip(_QUANTILES, quantiles, strict=True)},
            bins={"edges": edges.tolist(), "shares": (counts / len(as64)).tolist()},
        )
    else:
        codes, counts = np.unique(present.astype("int64"), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:_TOP_VALUES]
        shares = counts / len(values)
        summary.update(
            distinct=int(len(codes)),
            top_values=[
                {"value": int(codes[i]), "share": float(shares[i])} for i in order.tolist()
            ],
            other_share=float(max(0.0, 1.0 - summary["missing_rate"] - shares[order].sum())),
        )
    return summary
