"""Synthetic data in the Porto Seguro safe-driver shape, for demos, tests and benchmarks.

What makes it realistic enough to exercise the pipeline honestly: ~3.6 % positives,
-1 for missing at the competition's rates in the same columns, integer categoricals,
0/1 binaries (ps_ind_06..09 one-hot as in the original), continuous ps_reg/ps_car
floats, ps_calc_* pure noise, and a real but weak signal (a LightGBM model reaches a
test AUC around 0.7, not 0.99). The signal (which features matter, by how much) is
fixed; only the draws depend on the seed, so models generalise across seeds.
`drift` shifts feature distributions without changing that relationship.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from steps._cli import StepError, StepParser, run_step
from steps.dataset import PORTO_FEATURES

# Intercept chosen so that the undrifted population has ~3.6 % positives.
_INTERCEPT = -4.68
# The concept: drawn once from a fixed seed, identical for every data seed.
_CONCEPT = np.random.default_rng(20171129)
_CAR_01_EFFECT = _CONCEPT.normal(0, 0.25, 12)
_CAR_04_EFFECT = _CONCEPT.normal(0, 0.2, 10)
_CAR_06_EFFECT = _CONCEPT.normal(0, 0.2, 18)
_CAR_11_CAT_EFFECT = _CONCEPT.normal(0, 0.25, 105)
_IND_05_EFFECT = np.array([0.0, 0.45, 0.55, 0.35, 0.6, 0.5, 0.7])


def _categorical(rng, n: int, probs, drift: float) -> np.ndarray:
    p = np.asarray(probs, dtype="float64")
    if drift:
        # Tilt the mix towards higher codes: the same categories, different shares.
        p = p * np.exp(drift * np.linspace(-1.0, 1.0, len(p)))
    return rng.choice(len(p), size=n, p=p / p.sum()).astype("int16")


def _with_missing(rng, values: np.ndarray, rate: float, drift: float) -> np.ndarray:
    rate = min(0.95, rate * (1.0 + drift))
    out = values.copy()
    out[rng.random(len(values)) < rate] = -1
    return out


def generate(rows: int, *, seed: int, drift: float = 0.0) -> dict[str, np.ndarray]:
    """Columns of one data set: id, target and the 57 Porto Seguro features."""
    if rows < 1:
        raise StepError(f"--rows={rows}: accepted: >= 1")
    if not -5.0 <= drift <= 5.0:
        raise StepError(f"--drift={drift}: accepted: -5 to 5")
    rng = np.random.default_rng(seed)
    n = rows
    c: dict[str, np.ndarray] = {}
    z = rng.normal(0.0, 0.9, n)  # risk no feature explains: keeps AUC realistic

    c["ps_ind_01"] = np.minimum(rng.poisson(1.9 + 0.3 * drift, n), 7).astype("int16")
    z += 0.04 * c["ps_ind_01"]
    c["ps_ind_02_cat"] = _with_missing(
        rng, _categorical(rng, n, [0.73, 0.2, 0.05, 0.02], drift) + 1, 0.0004, drift
    )
    c["ps_ind_03"] = np.minimum(rng.poisson(4.4 + 0.5 * drift, n), 11).astype("int16")
    z += 0.035 * c["ps_ind_03"]
    c["ps_ind_04_cat"] = _with_missing(rng, _categorical(rng, n, [0.58, 0.42], drift), 0.0001, 0)
    ind05 = _categorical(rng, n, [0.89, 0.01, 0.03, 0.01, 0.02, 0.01, 0.03], drift)
    z += _IND_05_EFFECT[ind05]
    c["ps_ind_05_cat"] = _with_missing(rng, ind05, 0.01, drift)
    z += np.where(c["ps_ind_05_cat"] == -1, 0.4, 0.0)
    group = _categorical(rng, n, [0.39, 0.41, 0.1, 0.1], drift)
    z += np.array([-0.2, 0.0, 0.3, 0.35])[group]
    for i, name in enumerate(["ps_ind_06_bin", "ps_ind_07_bin", "ps_ind_08_bin", "ps_ind_09_bin"]):
        c[name] = (group == i).astype("int8")
    rare = [rng.random(n) < p for p in (0.0004, 0.001, 0.01, 0.001)]
    for i, flag in zip(range(10, 14), rare, strict=True):
        c[f"ps_ind_{i}_bin"] = flag.astype("int8")
    c["ps_ind_14"] = sum(flag.astype("int16") for flag in rare).astype("int16")
    c["ps_ind_15"] = np.clip(rng.normal(7.3 - drift, 3.5, n).round(), 0, 13).astype("int16")
    z -= 0.045 * (c["ps_ind_15"] - 7)
    ind16 = rng.random(n) < 0.66 - 0.05 * drift
    ind17 = (~ind16) & (rng.random(n) < 0.36)
    ind18 = (~ind16) & (~ind17) & (rng.random(n) < 0.45)
    z += np.where(ind16, -0.2, 0.0) + np.where(ind17, 0.4, 0.0)
    c["ps_ind_16_bin"], c["ps_ind_17_bin"], c["ps_ind_18_bin"] = (
        f.astype("int8") for f in (ind16, ind17, ind18)
    )

    reg01 = np.clip(rng.normal(0.61 + 0.1 * drift, 0.29, n).round(1), 0.0, 0.9)
    reg02 = np.clip(rng.gamma(2.0, 0.22 * (1 + 0.2 * drift), n).round(1), 0.0, 1.8)
    reg03 = np.sqrt(0.36 + reg01 * reg02 * 2.0 + rng.gamma(1.5, 0.15, n)) - 0.1
    z += 0.35 * reg01 + 0.4 * reg02 + 0.25 * (reg03 - 0.9)
    c["ps_reg_01"], c["ps_reg_02"] = reg01, reg02
    c["ps_reg_03"] = _with_missing(rng, reg03.round(6), 0.18, drift)

    car01 = _categorical(rng, n, [0.01, 0.01, 0.01, 0.01, 0.03, 0.03, 0.1, 0.3, 0.07, 0.03,
                                  0.08, 0.32], drift)  # fmt: skip
    z += _CAR_01_EFFECT[car01]
    c["ps_car_01_cat"] = _with_missing(rng, car01, 0.0002, drift)
    c["ps_car_02_cat"] = _with_missing(rng, _categorical(rng, n, [0.17, 0.83], drift), 1e-5, 0)
    car03 = _categorical(rng, n, [0.4, 0.6], drift)
    c["ps_car_03_cat"] = _with_missing(rng, car03, 0.69, drift)
    z += np.where(c["ps_car_03_cat"] == -1, -0.1, 0.15 * car03)
    car04 = _categorical(rng, n, [0.83, 0.05, 0.04, 0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 0.01],
                         drift)  # fmt: skip
    z += _CAR_04_EFFECT[car04]
    c["ps_car_04_cat"] = car04
    c["ps_car_05_cat"] = _with_missing(rng, _categorical(rng, n, [0.38, 0.62], drift), 0.45, drift)
    car06 = _categorical(rng, n, np.r_[0.19, np.full(17, 0.81 / 17)], drift)
    z += _CAR_06_EFFECT[car06]
    c["ps_car_06_cat"] = car06
    car07 = _categorical(rng, n, [0.05, 0.95], drift)
    c["ps_car_07_cat"] = _with_missing(rng, car07, 0.02, drift)
    z += np.where(c["ps_car_07_cat"] == 0, 0.5, 0.0) + np.where(c["ps_car_07_cat"] == -1, 0.3, 0.0)
    c["ps_car_08_cat"] = _categorical(rng, n, [0.17, 0.83], drift)
    c["ps_car_09_cat"] = _with_missing(
        rng, _categorical(rng, n, [0.33, 0.05, 0.59, 0.01, 0.02], drift), 0.001, drift
    )
    c["ps_car_10_cat"] = _categorical(rng, n, [0.008, 0.991, 0.001], drift)
    car11cat = np.minimum(rng.zipf(1.6, n), 104).astype("int16")
    z += _CAR_11_CAT_EFFECT[car11cat]
    c["ps_car_11_cat"] = car11cat
    c["ps_car_11"] = _with_missing(rng, _categorical(rng, n, [0.06, 0.2, 0.32, 0.42], drift),
                                   1e-5, 0)  # fmt: skip
    car12 = np.clip(rng.normal(0.38 + 0.02 * drift, 0.058, n), 0.1, 1.27)
    c["ps_car_12"] = _with_missing(rng, car12.round(6), 1e-5, 0)
    log13 = rng.normal(-0.24 + 0.08 * drift, 0.26, n) + 0.6 * (car12 - 0.38)
    car13 = np.clip(np.exp(log13), 0.25, 3.72)
    z += 1.6 * (np.log(car13) + 0.24)
    c["ps_car_13"] = car13.round(6)
    car14 = np.clip(rng.normal(0.37, 0.045, n), 0.1, 0.64)
    z += 1.2 * (car14 - 0.37)
    c["ps_car_14"] = _with_missing(rng, car14.round(6), 0.07, drift)
    car15 = np.sqrt(np.minimum(rng.poisson(9.5 + drift, n), 14)).round(6)
    z += 0.07 * car15
    c["ps_car_15"] = car15

    for i in range(1, 4):
        c[f"ps_calc_{i:02d}"] = (rng.integers(0, 10, n) / 10).round(1)
    calc_ranges = [(0, 5), (0, 9), (0, 10), (0, 12), (0, 11), (0, 23), (0, 19), (0, 13),
                   (0, 23), (0, 11), (0, 13)]  # fmt: skip
    for i, (lo, hi) in zip(range(4, 15), calc_ranges, strict=True):
        mean = (hi - lo) / 3 + drift
        c[f"ps_calc_{i:02d}"] = np.clip(rng.poisson(max(mean, 0.1), n), lo, hi).astype("int16")
    for i in range(15, 21):
        c[f"ps_calc_{i:02d}_bin"] = (rng.random(n) < 0.3 + 0.1 * (i % 3)).astype("int8")

    probability = 1.0 / (1.0 + np.exp(-(z + _INTERCEPT)))
    target = (rng.random(n) < probability).astype("int8")
    ordered = {"id": np.arange(1, n + 1, dtype="int64") * 2 + 5, "target": target}
    ordered.update((name, c[name]) for name in PORTO_FEATURES)
    return ordered


def write_sample_data(
    out: Path, *, rows: int, seed: int, parts: int = 4, drift: float = 0.0
) -> list[Path]:
    """Write `parts` CSV files part-00000.csv ... into out; deterministic for a seed."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not 1 <= parts <= 1000:
        raise StepError(f"--parts={parts}: accepted: 1 to 1000")
    columns = generate(rows, seed=seed, drift=drift)
    table = pa.table(columns)
    del columns
    out.mkdir(parents=True, exist_ok=True)
    written = []
    bounds = np.linspace(0, rows, min(parts, rows) + 1).astype(int)
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        path = out / f"part-{index:05d}.csv"
        tmp = path.with_name(f".{path.name}.tmp")
        pacsv.write_csv(table.slice(start, stop - start), tmp)
        tmp.replace(path)
        written.append(path)
    return written


def _parser() -> argparse.ArgumentParser:
    parser = StepParser(
        prog="python -m steps.sample_data",
        description="Write synthetic Porto Seguro-shaped training data as CSV parts.",
    )
    parser.add_argument("--rows", type=int, required=True, help="Number of rows.")
    parser.add_argument("--seed", type=int, required=True, help="Random seed (deterministic).")
    parser.add_argument("--out", type=Path, required=True, help="Folder to write into.")
    parser.add_argument("--parts", type=int, default=4, help="Number of CSV part files.")
    parser.add_argument(
        "--drift", type=float, default=0.0, help="Shift feature distributions (0 = none)."
    )
    return parser


def _run(args: argparse.Namespace) -> None:
    files = write_sample_data(
        args.out, rows=args.rows, seed=args.seed, parts=args.parts, drift=args.drift
    )
    print(f"wrote {args.rows} rows in {len(files)} file(s) to {args.out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_step(_run, _parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
