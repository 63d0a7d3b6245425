"""Which Submitter runs the pipeline: PIPELINE_BACKEND picks it."""

from __future__ import annotations

from pipeline.settings import Settings
from pipeline.submitter import Submitter


def make_submitter(settings: Settings) -> Submitter:
    """LocalSubmitter for `local` (the embedded default); AmlSubmitter for `aml`,
    imported only then, so the local path never loads azure-ai-ml."""
    if settings.pipeline_backend == "aml":
        from pipeline.aml_submitter import AmlSubmitter

        return AmlSubmitter(settings)
    from pipeline.local_submitter import LocalSubmitter

    return LocalSubmitter(settings)
