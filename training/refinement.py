"""Refinement by reinforcement learning, after distillation.

Two algorithms behind one command, each with its config and trainer:

- ``rwsft``: the paper's offline reward-weighted fine-tuning (:class:`~.rwsft.RwsftConfig`,
  ``RwsftTrainer``);
- ``grpo``: online GRPO with trl's ``GRPOTrainer`` (:class:`~.grpo.GrpoRefineConfig`,
  ``GrpoRefineTrainer``).

Both sample ``num_generations`` responses per pair at ``temperature`` (at most
``max_completion_length`` tokens) and reward them with the same plain reward functions
(:mod:`.rewards`): label agreement with the gold or teacher label, the format, optionally a
reward model's judgement, and the ranking-aware rewards that compare a query's candidates
(:mod:`.ranking_rewards`). With a ranking reward, rwsft rewards every pair's rollouts in one pool,
and GRPO's batches hold whole query groups (:mod:`.query_groups`).
"""
from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

from transformers import set_seed

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.outputs import writable_folder
from pyterrier_reasonrank.prompts import PromptEncoder

from .checkpoints import resume_point
from .evaluation import mean_reward
from .grpo import GrpoRefineConfig
from .packages import require_packages
from .query_groups import QueryGroupSampler, group_batching, query_groups
from .records import file_sha256, labelled_pairs, target_label
from .refine_config import RefineConfig
from .rewards import RANKING_REWARDS, check_reward_names, reward_columns, reward_functions
from .rollouts import RolloutScorer, reference_scores
from .runcard import SettingsCallback, deferred_push, plot_curves, push_student, write_student
from .rwsft import RwsftConfig, RwsftTrainer, weighted_examples
from .sampling import draw
from .student import StudentConfig, load_student

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def refine(config: Union[RwsftConfig, GrpoRefineConfig], student: StudentConfig) -> dict:
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
    groups = _query_groups(config, records, targets) if ranking and isinstance(config, GrpoRefineConfig) else None
    model, tokenizer = load_student(student, trust_remote_code=config.trust_remote_code,
                                    gradient_checkpointing=config.gradient_checkpointing)
    if student.use_peft and student.adapter is None:
        from peft import get_peft_model

        model = get_peft_model(model, student.peft_config())
    settings = config.student_settings(student, tokenizer, tasks=["explain"], stage=f"refine-{config.algorithm}")
    encoder = settings.encoder(tokenizer)
    # Built once the student is loaded: the ranking rewards score rollouts with it.
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
    if isinstance(config, RwsftConfig):
        examples, metrics["sampling"] = weighted_examples(
            functools.partial(draw, config=config, student=student, model=model, tokenizer=tokenizer), tokenizer,
            records, targets, encoder, rewards, keep_threshold=config.keep_threshold,
            weight_power=config.weight_power, include_teacher=config.include_teacher, keep_ties=config.keep_ties,
            reward_weights=config.reward_weights, references=references)
        if not examples:
            raise InputError("no sampled response was kept: every pair's candidates tied on reward and keep_ties is "
                             "off; raise temperature or num_generations")
        trainer = RwsftTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                               processing_class=tokenizer, pad_token_id=tokenizer.pad_token_id,
                               callbacks=[SettingsCallback(settings)])
    else:
        from .grpo_trainer import GrpoRefineTrainer

        encoded = [encoder.encode(r["query"], r["text"]) for r in records]
        texts = [tokenizer.decode(ids) for ids in encoded]
        columns = reward_columns(records, targets, encoded, references)
        dataset = Dataset.from_list([{"prompt": text, **row} for text, row in zip(texts, columns)])
        trainer = GrpoRefineTrainer(model=model, reward_funcs=rewards, args=config, train_dataset=dataset,
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
    write_student(config.output_dir, settings, configs=[config, student], data=data, metrics=metrics)
    if push:
        push_student(config.output_dir, config, stage=f"refine-{config.algorithm}")
    plot_curves(trainer.state.log_history, f"{config.output_dir}/curves.png", title=f"refinement ({config.algorithm})")
    return metrics


def _query_groups(config: GrpoRefineConfig, records: Sequence[dict],
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
