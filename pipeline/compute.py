"""Which cluster each step group of a training run uses.

Step groups: `prep_compute` runs prep, check_drift and score_champion (the cheap
CPU work), `train_compute` runs the train slots; every other node runs on the job's
default compute. The pipeline component promotes both to pipeline inputs
(`compute: ${{parent.inputs.train_compute}}`, as Microsoft Learn's "Use pipeline
components" shows), so the job body carries them as inputs. What happens when a
low-priority node is preempted is in pipeline/preemption.py.
"""

from __future__ import annotations

from pipeline.request import TrainingRequest
from pipeline.settings import Settings

PREP_NODES = ("prep", "check_drift", "score_champion")
TRAIN_NODES = ("train", "train_1", "train_2", "train_3")


def step_computes(
    request: TrainingRequest, settings: Settings, compute: str, *, fanned_out: bool
) -> dict[str, str]:
    """The pipeline's prep_compute and train_compute inputs for a job whose default
    compute is `compute`. In a fan-out the computes compared are the training ones,
    so each job trains on its own `compute`; prep still follows the request/setting."""
    prep = request.prep_compute or settings.aml_prep_compute or compute
    if fanned_out:
        train = compute
    else:
        train = request.train_compute or settings.aml_train_compute or compute
    return {"prep_compute": prep, "train_compute": train}
