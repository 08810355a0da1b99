"""Studies end to end: a YAML study file (``config``) planned into tasks (``plan``), executed in
process or on Ray (``executors``) into a Zarr store, then reported to MLflow and figures
(``report``); ``runner`` drives one invocation. The orchestration layer: the only package that
imports numerics (through ``landscape.passes``), storage, tracking and plotting together."""

from landscape.study.config import Study, StudyError, load_study
from landscape.study.runner import StudyOutcome, run_study

__all__ = ["Study", "StudyError", "StudyOutcome", "load_study", "run_study"]
