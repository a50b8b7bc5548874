"""pyterrier-reasonrank: a small generative model as a reasoning re-ranker for PyTerrier."""
from . import prompts
from .adaptive import Escalation
from .display import ReasonRankResults, explanations_html, write_report
from .errors import EndpointError, InputError, ModelNotFoundError, PickleCheckpointError, StoreError, UserError
from .fusion import FirstStageFusion
from .loading import DEFAULT_MODEL
from .query_generator import QueryGenerator
from .ranker import ReasonRanker
from .store import JudgementStore
from .student import Student
from .versions import __version__

__all__ = ["Student", "ReasonRanker", "QueryGenerator", "JudgementStore", "Escalation", "FirstStageFusion",
           "ReasonRankResults", "explanations_html", "write_report", "DEFAULT_MODEL", "UserError", "InputError",
           "EndpointError", "ModelNotFoundError", "PickleCheckpointError", "StoreError", "prompts", "__version__"]
