"""Studies end to end: a YAML study file (``config``) run into a Zarr store, MLflow and figures
(``runner``). The orchestration layer: the only package that imports numerics, storage, tracking
and plotting together."""

from landscape.study.config import Study, StudyError, load_study
from landscape.study.runner import StudyOutcome, run_study

__all__ = ["Study", "StudyError", "StudyOutcome", "load_study", "run_study"]
