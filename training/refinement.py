"""Refinement by reinforcement learning, after distillation.

Two algorithms behind one command:

- ``rwsft``: the paper's offline reward-weighted fine-tuning (see :mod:`.rwsft`);
- ``grpo``: online GRPO with trl's ``GRPOTrainer``.

Both sample ``num_generations`` responses per pair at ``temperature`` (at most
``max_completion_length`` tokens) and reward them with the same plain reward functions
(:mod:`.rewards`): label agreement with the gold or teacher label, the format, optionally a
reward model's judgement, and the ranking-aware rewards that compare a query's candidates
(:mod:`.ranking_rewards`). With a ranking reward, rwsft rewards every pair's rollouts in one pool,
and GRPO's batches hold whole query groups (:mod:`.query_groups`).
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

from transformers import set_seed
from trl import GRPOConfig, GRPOTrainer, get_peft_config

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.numeric import check_fields, non_negative_number, positive_int, proportion
from pyterrier_reasonrank.outputs import writable_folder
from pyterrier_reasonrank.prompts import PromptEncoder

from .arguments import TrainerDefaults
from .checkpoints import resume_point
from .evaluation import mean_reward
from .packages import require_packages
from .query_groups import QueryGroupSampler, group_batching, query_groups
from .records import LABEL_SOURCES, file_sha256, labelled_pairs, target_label
from .rewards import RANKING_REWARDS, REWARDS, check_reward_names, reward_columns, reward_functions
from .rollouts import RolloutScorer, reference_scores
from .runcard import SettingsCallback, deferred_push, plot_curves, push_student, write_student
from .rwsft import RewardWeightedTrainer, weighted_examples
from .sampling import SAMPLING_BACKENDS, draw
from .student import StudentConfig, load_student

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ALGORITHMS = ("rwsft", "grpo")


@dataclass
class RefineConfig(TrainerDefaults, GRPOConfig):
    """trl's ``GRPOConfig`` plus the data, the rewards and the reward-weighted algorithm's settings.

    ``num_generations``, ``temperature``, ``max_completion_length`` and ``reward_weights`` serve
    both algorithms. Defaults differ from ``GRPOConfig`` in bf16 (only on a GPU that supports it)
    and ``report_to`` (none).
    """

    algorithm: str = field(default="rwsft", metadata={"help": "rwsft (reward-weighted, offline) or grpo (online)"})
    train_file: Optional[str] = field(default=None, metadata={"help": "annotated JSONL: the pairs to refine on"})
    eval_file: Optional[str] = field(default=None, metadata={
        "help": "held-out JSONL: mean sampled reward before and after, in the run card"})
    rewards: list[str] = field(default_factory=lambda: ["label", "format"], metadata={
        "help": f"reward functions: {', '.join(REWARDS)}, or the import path of your own (module.function)"})
    reward_model: Optional[str] = field(default=None, metadata={"help": "sequence-classification reward model"})
    reward_model_max_length: int = field(default=4096, metadata={
        "help": "conversations the reward model reads are fitted to this many tokens by cutting the document"})
    partial_credit: float = field(default=0.5, metadata={"help": "label reward for a label off by one"})
    label_source: str = field(default="gold_or_teacher", metadata={"help": f"target label: one of {LABEL_SOURCES}"})
    keep_threshold: float = field(default=0.85, metadata={
        "help": "rwsft: keep responses with normalised reward >= this"})
    weight_power: float = field(default=3.0, metadata={"help": "rwsft: loss weight = normalised reward ** this"})
    include_teacher: bool = field(default=True, metadata={"help": "rwsft: the teacher's response is a candidate too"})
    keep_ties: bool = field(default=True, metadata={
        "help": "rwsft: a pair whose candidates all tie keeps them at weight 1 (the paper), or is left out"})
    eval_samples: int = field(default=4, metadata={"help": "responses sampled per held-out pair for the mean reward"})
    sampling_backend: str = field(default="transformers", metadata={
        "help": "rwsft: draw the responses with transformers, or vllm (its engine, in a process of its own)"})
    sampling_engine_options: Union[dict, str, None] = field(default=None, metadata={
        "help": "rwsft with vllm: options of vllm.LLM, e.g. '{\"gpu_memory_utilization\": 0.5}'"})
    composite_alpha: float = field(default=0.75, metadata={
        "help": "composite reward: weight of Retro*'s intra-document part (the paper's 0.75)"})
    composite_threshold: float = field(default=0.4, metadata={
        "help": "composite reward: the intra-document threshold tau on the 0-2 scale (the paper's 20 of 100)"})
    rr_positive_label: int = field(default=1, metadata={"help": "rr reward: the least label of a positive document"})
    ndcg_cutoff: int = field(default=10, metadata={"help": "ndcg reward: the rank cutoff"})
    query_group_size: Optional[int] = field(default=None, metadata={
        "help": "grpo with a ranking reward: candidates of a query per batch, drawn with a relevant and a "
                "non-relevant one (default: all of a query's)"})
    include_disagreements: bool = field(default=False, metadata={
        "help": "also refine on pairs whose teacher samples had no majority label (annotate's teacher_samples)"})

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise InputError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        check_fields(self, {"num_generations": positive_int, "partial_credit": proportion, "keep_threshold": proportion,
                            "weight_power": non_negative_number, "eval_samples": positive_int,
                            "reward_model_max_length": positive_int, "composite_alpha": proportion,
                            "composite_threshold": non_negative_number, "ndcg_cutoff": positive_int,
                            "query_group_size": positive_int}, optional=("num_generations", "query_group_size"))
        if self.rr_positive_label not in (1, 2):
            raise InputError(f"rr_positive_label must be 1 or 2 (the least label of a positive document), got "
                             f"{self.rr_positive_label!r}")
        if self.query_group_size is not None and self.query_group_size < 2:
            raise InputError(f"query_group_size must be at least 2 (a relevant and a non-relevant candidate), got "
                             f"{self.query_group_size}")
        if self.algorithm == "grpo" and self.num_generations is not None and self.num_generations < 2:
            raise InputError(f"num_generations must be at least 2 with algorithm grpo (its advantages compare the "
                             f"responses to one prompt), got {self.num_generations}")
        if self.label_source not in LABEL_SOURCES:
            raise InputError(f"label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}")
        if self.sampling_backend not in SAMPLING_BACKENDS:
            raise InputError(f"sampling_backend must be one of {SAMPLING_BACKENDS}, got {self.sampling_backend!r}")
        if isinstance(self.sampling_engine_options, str):
            try:
                self.sampling_engine_options = json.loads(self.sampling_engine_options)
            except json.JSONDecodeError as error:
                raise InputError(f"sampling_engine_options is not JSON ({error}): give the options of vllm.LLM as "
                                 "a JSON object, e.g. '{\"gpu_memory_utilization\": 0.5}'") from None
        if "reward_model" in self.rewards and len(self.rewards) > 1 and not self.reward_weights:
            raise InputError(f"rewards {self.rewards} mix a reward model's scores (unbounded logits) with rewards "
                             "in [0, 1]: give reward_weights, one per reward, to say how they add up")
        super().__post_init__()

    def ranking_options(self) -> dict:
        """The options of the ranking rewards (see :class:`.ranking_rewards.ListReward`)."""
        return {"alpha": self.composite_alpha, "threshold": self.composite_threshold,
                "positive_label": self.rr_positive_label, "cutoff": self.ndcg_cutoff}


class EncodedPromptGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` that feeds the policy the prompt token ids made by the project's prompt encoder.

    These are token for token what ``ReasonRanker`` feeds it; the prompt text is not re-tokenized.
    With a sampler of query groups, its batches hold whole query groups.
    """

    def __init__(self, *args, prompt_ids: dict[str, list[int]], sampler: Optional[QueryGroupSampler] = None,
                 **kwargs):
        """Keep the encoded prompts, then set up ``GRPOTrainer`` with the other arguments.

        Args:
            *args: ``GRPOTrainer``'s positional arguments.
            prompt_ids: Token ids of each prompt, keyed by the prompt text in the dataset.
            sampler: Draws the training batches instead of trl's sampler (for ranking rewards).
            **kwargs: ``GRPOTrainer``'s keyword arguments.
        """
        self._prompt_ids = prompt_ids
        self._sampler = sampler
        super().__init__(*args, **kwargs)

    def _tokenize_prompts(self, prompts: list[str]):
        # trl's hook for turning prompts into ids (returns ids, images, multimodal fields).
        return [self._prompt_ids[prompt] for prompt in prompts], None, {}

    def _get_train_sampler(self, dataset=None):  # noqa: ANN001, ANN202
        # trl has no public hook for what a batch holds; this is the one its own RepeatSampler comes from.
        return self._sampler if self._sampler is not None else super()._get_train_sampler(dataset)


def refine(config: RefineConfig, student: StudentConfig) -> dict:
    """Refine the student (usually the distilled adapter) and save the result, self-describing.

    The prompts are built with the settings of the adapter it starts from (its truncation, unless
    given here), and the result is saved with its settings, a model card, a run card and its curves.

    Returns:
        The run's metrics (also in ``run_card.json``), with ``eval_reward_before`` and
        ``eval_reward_after`` when an ``eval_file`` is given.
    """
    from datasets import Dataset

    # Every input is read and checked before any work starts.
    require_packages(config, student)
    if not config.train_file:
        raise InputError("no train_file: the annotated JSONL to refine on")
    records = labelled_pairs(config.train_file, config.label_source,
                             include_disagreements=config.include_disagreements)
    targets = [target_label(r, config.label_source) for r in records]
    held_out = labelled_pairs(config.eval_file, config.label_source) if config.eval_file else None
    check_reward_names(config.rewards, records + (held_out or []), reward_model=config.reward_model)
    writable_folder(config.output_dir)
    resume = resume_point(config)
    set_seed(config.seed)  # sampling before training (held-out reward, rwsft's draw) is repeatable too
    ranking = any(name in RANKING_REWARDS for name in config.rewards)
    groups = _query_groups(config, records, targets) if ranking and config.algorithm == "grpo" else None
    model, tokenizer = load_student(student, trust_remote_code=config.trust_remote_code,
                                    gradient_checkpointing=config.gradient_checkpointing)
    if student.use_peft and student.adapter is None:
        from peft import get_peft_model

        model = get_peft_model(model, get_peft_config(student))
    settings = config.student_settings(student, tokenizer, tasks=["explain"], stage=f"refine-{config.algorithm}")
    encoder = settings.encoder(tokenizer)
    rewards = reward_functions(config.rewards, partial_credit=config.partial_credit, reward_model=config.reward_model,
                               scorer=RolloutScorer(model, tokenizer, encoder,
                                                    batch_size=config.per_device_eval_batch_size),
                               ranking_options=config.ranking_options(), max_length=config.reward_model_max_length,
                               trust_remote_code=config.trust_remote_code)
    references = _references(config, model, tokenizer, records, encoder)
    metrics: dict = {}
    if groups is not None:
        metrics["query_groups"] = groups[1]
    if held_out:
        held_out_references = _references(config, model, tokenizer, held_out, encoder)
        metrics["eval_reward_before"] = _mean_reward(model, tokenizer, held_out, rewards, encoder, config,
                                                     held_out_references)

    push = deferred_push(config)
    start = time.perf_counter()
    if config.algorithm == "rwsft":
        examples, metrics["sampling"] = weighted_examples(
            functools.partial(draw, config=config, student=student, model=model, tokenizer=tokenizer), tokenizer,
            records, targets, encoder, rewards, keep_threshold=config.keep_threshold,
            weight_power=config.weight_power, include_teacher=config.include_teacher, keep_ties=config.keep_ties,
            reward_weights=config.reward_weights, references=references)
        if not examples:
            raise InputError("no sampled response was kept: every pair's candidates tied on reward and keep_ties is "
                             "off; raise temperature or num_generations")
        trainer = RewardWeightedTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                                        processing_class=tokenizer, pad_token_id=tokenizer.pad_token_id,
                                        callbacks=[SettingsCallback(settings)])
    else:
        encoded = [encoder.encode(r["query"], r["text"]) for r in records]
        texts = [tokenizer.decode(ids) for ids in encoded]
        columns = reward_columns(records, targets, encoded, references)
        dataset = Dataset.from_list([{"prompt": text, **row} for text, row in zip(texts, columns)])
        trainer = EncodedPromptGRPOTrainer(model=model, reward_funcs=rewards, args=config, train_dataset=dataset,
                                           processing_class=tokenizer, prompt_ids=dict(zip(texts, encoded)),
                                           sampler=groups[0] if groups is not None else None,
                                           callbacks=[SettingsCallback(settings)])
    result = trainer.train(resume_from_checkpoint=resume)
    metrics.update(train_loss=result.training_loss, steps=result.global_step,
                   train_seconds=round(time.perf_counter() - start, 1))
    trainer.save_model(config.output_dir)
    if held_out:
        metrics["eval_reward_after"] = _mean_reward(trainer.model, tokenizer, held_out, rewards, encoder, config,
                                                    held_out_references)
    data = {"train_file": config.train_file, "train_sha256": file_sha256(config.train_file), "pairs": len(records)}
    config.push_to_hub = push
    write_student(config.output_dir, settings, configs=[config, student], data=data, metrics=metrics,
                  adapter=student.use_peft)
    if push:
        push_student(config.output_dir, config, stage=f"refine-{config.algorithm}")
    plot_curves(trainer.state.log_history, f"{config.output_dir}/curves.png", title=f"refinement ({config.algorithm})")
    return metrics


def _query_groups(config: RefineConfig, records: Sequence[dict],
                  targets: Sequence[int]) -> tuple[QueryGroupSampler, dict]:
    """GRPO's batches of whole query groups for a ranking reward, and what they hold."""
    groups, left_out = query_groups([str(r["qid"]) for r in records], targets, config.query_group_size)
    size = config.query_group_size or len(groups[0])
    per_batch = group_batching(config.per_device_train_batch_size, config.steps_per_generation, config.world_size,
                               size, config.num_generations)
    sampler = QueryGroupSampler(groups, targets, group_size=config.query_group_size,
                                num_generations=config.num_generations, queries_per_batch=per_batch,
                                repeat_count=config.num_iterations * config.steps_per_generation,
                                shuffle=config.shuffle_dataset, seed=config.seed)
    return sampler, {"queries": len(groups), "group_size": size, "queries_per_batch": per_batch,
                     "left_out": left_out}


def _references(config: RefineConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                records: Sequence[dict], encoder: PromptEncoder) -> Optional[list[float]]:
    """The starting model's scores of the pairs, which the ``rr`` reward compares rollouts with."""
    if "rr" not in config.rewards:
        return None
    return reference_scores(model, tokenizer, records, encoder, max_new_tokens=config.max_completion_length,
                            batch_size=config.per_device_eval_batch_size)


def _mean_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[dict],
                 rewards: Sequence[Callable], encoder: PromptEncoder, config: RefineConfig,
                 references: Optional[Sequence[float]]) -> float:
    return mean_reward(model, tokenizer, records, rewards, encoder, label_source=config.label_source,
                       num_samples=config.eval_samples, temperature=config.temperature,
                       max_new_tokens=config.max_completion_length, batch_size=config.per_device_eval_batch_size,
                       reward_weights=config.reward_weights, references=references)
