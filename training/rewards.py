"""Reward functions for refinement, as plain callables in trl's convention.

Each takes the sampled ``completions`` (the response text after the prompt) and the dataset's
columns as keyword arguments, and returns one float per completion::

    label_reward(completions, target_label=[2, 0]) -> [1.0, 0.0]

A recipe names them: ``label``, ``format`` and ``reward_model`` are built in, so are the
ranking-aware ``composite``, ``rr`` and ``ndcg`` (:mod:`.ranking_rewards`: they reward a rollout
against the other rollouts of its query), and any other is an import path ``module.function`` (as
trl's scripts do), so a reward of your own needs no change here. Every reward function is given
the columns of :func:`reward_columns` for each rollout.
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

    The label is read as the ranker reads it (:func:`~pyterrier_reasonrank.prompts.read_label`: the
    one after the first ``Relevance:``). A pair without a target label gets ``None`` (trl leaves it
    out of the reward).
    """
    rewards: list[Optional[float]] = []
    for completion, target in zip(completions, target_label):
        if target is None:
            rewards.append(None)
            continue
        label = prompts.read_label(completion)
        rewards.append(0.0 if label is None else 1.0 if label == target
                       else partial_credit if abs(label - target) == 1 else 0.0)
    return rewards


def format_reward(completions: Sequence[str], **kwargs) -> list[float]:
    """1 for a response in the format, else 0.

    The format is a non-empty explanation, then one ``Relevance:`` line with a label and nothing
    after it.
    """
    return [1.0 if well_formed(completion) else 0.0 for completion in completions]


def well_formed(completion: str) -> bool:
    """Whether a response is in the format: a non-empty explanation, then one label line and nothing after it."""
    head, marker, tail = completion.rpartition("\n" + prompts.LABEL_MARKER)
    # The prompt already holds "Explanation:", so a completion may start without it.
    explanation = head.strip().removeprefix(prompts.EXPLANATION_PREFIX).strip()
    return bool(marker and explanation) and prompts.LABEL_MARKER not in head \
        and tail.rstrip() in {f" {label}" for label in prompts.LABELS}  # as format_response writes it


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


RANKING_REWARDS = ("composite", "rr", "ndcg")
"""The ranking-aware rewards (:mod:`.ranking_rewards`)."""
REWARDS = ("label", "format", "reward_model", *RANKING_REWARDS)
"""The built-in rewards; any other name is an import path ``module.function``."""


def reward_columns(records: Sequence[dict], targets: Sequence[Optional[int]], prompts: Sequence[Sequence[int]],
                   references: Optional[Sequence[float]] = None) -> list[dict]:
    """What a reward function is told of each pair, beside the rollout (``completions``, ``completion_ids``).

    ``target_label``, ``query``, ``text``, ``qid``, ``docno``, the prompt's token ids
    (``prompt_token_ids``), and with ``references`` the starting model's score of the pair
    (``reference_score``, for ``rr``).
    """
    columns = [{"target_label": target, "query": r["query"], "text": r["text"], "qid": str(r.get("qid", "")),
                "docno": str(r.get("docno", "")), "prompt_token_ids": list(prompt)}
               for r, target, prompt in zip(records, targets, prompts)]
    if references is not None:
        for row, reference in zip(columns, references):
            row["reference_score"] = float(reference)
    return columns


def reward_functions(names: Sequence[str], *, partial_credit: float = 0.5, reward_model: Optional[str] = None,
                     scorer: Optional[Callable] = None, ranking_options: Optional[dict] = None,
                     **reward_model_options: object) -> list[Callable]:
    """The named reward functions, ready for refinement (and for trl's ``GRPOTrainer``).

    Args:
        names: ``"label"``, ``"format"``, ``"reward_model"``, ``"composite"``, ``"rr"``,
            ``"ndcg"``, or the import path of a function of your own, e.g.
            ``"my_rewards.brevity"`` (any callable in trl's reward convention).
        partial_credit: The label reward for a label off by one.
        reward_model: The reward model, when ``"reward_model"`` is named.
        scorer: Scores each rollout (:class:`.rollouts.RolloutScorer`), for the ranking rewards.
        ranking_options: The ranking rewards' options (``alpha``, ``threshold``,
            ``positive_label``, ``cutoff``; see :class:`.ranking_rewards.ListReward`).
        reward_model_options: Passed to :class:`RewardModelReward`.

    Raises:
        InputError: A name that is neither built in nor importable, ``reward_model`` named without a
            model, or a ranking reward without a scorer.
    """
    check_reward_names(names, reward_model=reward_model)
    functions: list[Callable] = []
    for name in names:
        if name in RANKING_REWARDS:
            from .ranking_rewards import ListReward  # it uses this module's format check

            if scorer is None:
                raise InputError(f"the {name} reward ranks rollouts by the student's score: give a scorer")
            functions.append(ListReward(name, scorer, **(ranking_options or {})))
            continue
        if name == "label":
            functions.append(functools.update_wrapper(functools.partial(label_reward, partial_credit=partial_credit),
                                                      label_reward))
        elif name == "format":
            functions.append(format_reward)
        elif name == "reward_model":
            functions.append(RewardModelReward(reward_model, **reward_model_options))
        else:
            functions.append(imported_reward(name))
    return functions


def check_reward_names(names: Sequence[str], records: Sequence[dict] = (), *,
                       reward_model: Optional[str] = None) -> None:
    """Check, before any model is loaded, that each reward can be built and the pairs have what it needs.

    Raises:
        InputError: A name that is neither built in nor importable, ``reward_model`` named without a
            model, or a ranking reward with pairs that do not say their query and document
            (``qid``, ``docno``).
    """
    for name in names:
        if name not in REWARDS:
            imported_reward(name)
    if "reward_model" in names and not reward_model:
        raise InputError("the reward_model reward needs `reward_model`: a sequence-classification model id")
    if any(name in RANKING_REWARDS for name in names):
        missing = next((r for r in records if r.get("qid") is None or r.get("docno") is None), None)
        if missing is not None:
            raise InputError(f"the ranking rewards compare a query's documents, so each pair needs its qid and docno; "
                             f"a pair of query {str(missing['query'])[:40]!r} has "
                             f"{'no qid' if missing.get('qid') is None else 'no docno'}")


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
