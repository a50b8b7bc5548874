"""Reward functions for refinement, as plain callables in trl's convention.

Each takes the sampled ``completions`` (the response text after the prompt) and the dataset's
columns as keyword arguments, and returns one float per completion::

    label_reward(completions, target_label=[2, 0]) -> [1.0, 0.0]

A recipe names them: ``label``, ``format`` and ``reward_model`` are built in, and any other is an
import path ``module.function`` (as trl's scripts do), so a reward of your own needs no change here.
"""
from __future__ import annotations

import functools
import importlib
from typing import Callable, Optional, Sequence, Union

import torch

from pyterrier_reasonrank import prompts
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.prompts import ConversationEncoder


def label_reward(completions: Sequence[str], target_label: Sequence[Optional[int]], partial_credit: float = 0.5,
                 **kwargs) -> list[Optional[float]]:
    """1 for the target label, ``partial_credit`` for a label off by one, 0 for a wrong or missing label.

    A pair without a target label gets ``None`` (trl leaves it out of the reward).
    """
    rewards: list[Optional[float]] = []
    for completion, target in zip(completions, target_label):
        if target is None:
            rewards.append(None)
            continue
        label = prompts.parse_response(completion).label
        rewards.append(0.0 if label is None else 1.0 if label == target
                       else partial_credit if abs(label - target) == 1 else 0.0)
    return rewards


def format_reward(completions: Sequence[str], **kwargs) -> list[float]:
    """1 for a response in the format, else 0.

    The format is a non-empty explanation, then one ``Relevance:`` line with a label and nothing
    after it.
    """
    return [1.0 if _well_formed(completion) else 0.0 for completion in completions]


def _well_formed(completion: str) -> bool:
    head, marker, tail = completion.rpartition("\n" + prompts.LABEL_MARKER)
    # The prompt already holds "Explanation:", so a completion may start without it.
    explanation = head.strip().removeprefix(prompts.EXPLANATION_PREFIX).strip()
    return bool(marker and explanation) and prompts.LABEL_MARKER not in head \
        and tail.strip() in {str(label) for label in prompts.LABELS}


class RewardModelReward:
    """The judgement of a Hugging Face sequence-classification reward model on each response.

    The reward model sees the conversation (the judging instructions and the user's query and
    document, then the student's response) through its own chat template, and its first logit is
    the reward. A conversation longer than ``max_length`` has its document cut, never the response.
    """

    __name__ = "reward_model"

    def __init__(self, model: str, *, device: Union[str, torch.device, None] = None,
                 dtype: Union[str, torch.dtype, None] = None, batch_size: int = 8, max_length: int = 4096,
                 trust_remote_code: bool = False):
        """Load the reward model and its tokenizer onto ``device``, in eval mode.

        Args:
            model: Hub id or local directory of an ``AutoModelForSequenceClassification`` reward model.
            device: Default: CUDA when available.
            dtype: Default: bfloat16 on a GPU, float32 on CPU.
            batch_size: Responses scored at once.
            max_length: Conversations are fitted to this many tokens by cutting the document.
            trust_remote_code: Allow the model's own code to run.

        Raises:
            ModelNotFoundError: The reward model could not be found.
        """
        from transformers import AutoModelForSequenceClassification

        from pyterrier_reasonrank.loading import load_model, load_tokenizer, resolve_device, resolve_dtype

        device = resolve_device(device)
        self.model = load_model(model, dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code,
                                model_class=AutoModelForSequenceClassification, what="reward model").to(device).eval()
        self.tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size
        self.encoder = ConversationEncoder(self.tokenizer, max_length=max_length)

    @torch.inference_mode()
    def __call__(self, completions: Sequence[str], query: Sequence[str], text: Sequence[str],
                 **kwargs) -> list[float]:
        """The reward model's first logit for each response, scored in batches of ``batch_size``.

        Args:
            completions: The sampled responses (the text after the prompt's ``Explanation:``).
            query: The query of each response's pair.
            text: The document text of each response's pair.
            **kwargs: The dataset's other columns (trl passes them all): ignored.
        """
        conversations = [self.encoder.encode(q, d, c) for c, q, d in zip(completions, query, text)]
        rewards: list[float] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = self.tokenizer.pad({"input_ids": conversations[start:start + self.batch_size]},
                                       return_tensors="pt").to(self.model.device)
            rewards += self.model(**batch).logits[:, 0].float().tolist()
        return rewards


REWARDS = ("label", "format", "reward_model")
"""The built-in rewards; any other name is an import path ``module.function``."""


def reward_functions(names: Sequence[str], *, partial_credit: float = 0.5, reward_model: Optional[str] = None,
                     **reward_model_options: object) -> list[Callable]:
    """The named reward functions, ready for refinement (and for trl's ``GRPOTrainer``).

    Args:
        names: ``"label"``, ``"format"``, ``"reward_model"``, or the import path of a function of
            your own, e.g. ``"my_rewards.brevity"`` (any callable in trl's reward convention).
        partial_credit: The label reward for a label off by one.
        reward_model: The reward model, when ``"reward_model"`` is named.
        reward_model_options: Passed to :class:`RewardModelReward`.

    Raises:
        InputError: A name that is neither built in nor importable, or ``reward_model`` named without a model.
    """
    functions: list[Callable] = []
    for name in names:
        if name == "label":
            functions.append(functools.update_wrapper(functools.partial(label_reward, partial_credit=partial_credit),
                                                      label_reward))
        elif name == "format":
            functions.append(format_reward)
        elif name == "reward_model":
            if not reward_model:
                raise InputError("the reward_model reward needs `reward_model`: a sequence-classification model id")
            functions.append(RewardModelReward(reward_model, **reward_model_options))
        else:
            functions.append(imported_reward(name))
    return functions


def imported_reward(path: str) -> Callable:
    """The reward function at an import path ``module.function``.

    Raises:
        InputError: It cannot be imported, or is not callable.
    """
    module, _, attribute = path.rpartition(".")
    if not module:
        raise InputError(f"unknown reward {path!r}: the built-in ones are {list(REWARDS)}; a reward of your own is "
                         "named by its import path, module.function")
    try:
        function = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"cannot import the reward {path!r}: {error}") from None
    if not callable(function):
        raise InputError(f"the reward {path!r} is not a function")
    return function
