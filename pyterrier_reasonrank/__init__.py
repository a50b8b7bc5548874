"""pyterrier-reasonrank: a small generative model as a reasoning re-ranker for PyTerrier."""
from . import prompts
from .backends.hf import ModelNotFoundError
from .ranker import DEFAULT_MODEL, ReasonRanker

__version__ = "0.1.0"

__all__ = ["ReasonRanker", "DEFAULT_MODEL", "ModelNotFoundError", "prompts", "__version__"]
