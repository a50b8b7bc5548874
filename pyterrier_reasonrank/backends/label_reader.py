"""vLLM's logits processor that steers a request to write its label where the explanation ends.

The engine backend starts its engines with it; a server takes it as
``vllm serve ... --logits-processors pyterrier_reasonrank.backends.label_reader:LabelReader``. The
steering is :mod:`~pyterrier_reasonrank.backends.label_steering`'s; this module only plugs it into vLLM.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from .label_steering import ARGUMENT, RequestSteering, read_arguments

if TYPE_CHECKING:
    from vllm import SamplingParams


class LabelReader(AdapterLogitsProcessor):
    """vLLM logits processor: steers the requests whose ``extra_args`` carry :data:`~.label_steering.ARGUMENT`."""

    @classmethod
    def validate_params(cls, params: SamplingParams) -> None:
        """Refuse a request whose steering arguments are malformed, as it is admitted (a server answers HTTP 400).

        Raises:
            ValueError: See :func:`~.label_steering.read_arguments`.
        """
        arguments = (params.extra_args or {}).get(ARGUMENT)
        if arguments is not None:
            read_arguments(arguments)

    def is_argmax_invariant(self) -> bool:
        """It changes what greedy decoding writes (the forced ending, the label, the end)."""
        return False

    def new_req_logits_processor(self, params: SamplingParams) -> Optional[RequestSteering]:
        """The steering of a request, or ``None`` for a request that did not ask for it."""
        arguments = (params.extra_args or {}).get(ARGUMENT)
        return None if arguments is None else RequestSteering(arguments)
