"""Training a reasoning re-ranker (``reasonrank-train``): teacher annotation, distillation, refinement.

.. code-block:: python

    from pyterrier_reasonrank.training import AnnotateConfig, annotate, DistillConfig, distill, StudentConfig
    from pyterrier_reasonrank.training import RwsftConfig, GrpoRefineConfig, refine  # a config per algorithm

The stages' modules load trl, datasets and the teachers' clients on first use, not on import.
"""
import importlib
import logging
import warnings
from typing import Any

# trl warns on import when the installed vLLM is newer than the versions it lists (the CPU build
# here is). Refinement samples with vLLM's engine through this package, not trl's integration; a GPU
# user who sets GRPO's use_vllm installs a vLLM that trl supports.
warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions", category=UserWarning)
# trl's GRPO imports vLLM (when installed), whose import warns on a machine without a GPU that its
# Triton has no CPU backend: a line before any result or error, about a kernel library that
# training with transformers does not use. Set before vLLM configures its loggers, which keeps it.
logging.getLogger("vllm.triton_utils.importing").setLevel(logging.ERROR)

_EXPORTS = {
    "SourceConfig": "sources", "candidate_pairs": "sources",
    "AnnotateConfig": "annotation", "annotate": "annotation",
    "OpenAITeacher": "teachers", "LocalTeacher": "teachers",
    "StudentConfig": "student", "load_student": "student",
    "DistillConfig": "distillation", "distill": "distillation",
    "RefineConfig": "refine_config", "refine": "refinement",
    "RwsftConfig": "rwsft", "RwsftTrainer": "rwsft", "GrpoRefineConfig": "grpo", "GrpoRefineTrainer": "grpo_trainer",
    "label_reward": "rewards", "format_reward": "rewards", "RewardModelReward": "rewards",
    "ListReward": "ranking_rewards", "RolloutScorer": "rollouts", "consensus": "consensus",
    "label_accuracy": "evaluation", "mean_reward": "evaluation",
    "read_recipe": "recipes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
