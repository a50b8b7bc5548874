"""What a training run leaves beside its model: its settings, a model card, a run card (JSON) and its curves (PNG)."""
from __future__ import annotations

import dataclasses
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pyterrier_reasonrank.redaction import config_secrets, scrub
from pyterrier_reasonrank.settings import StudentSettings
from pyterrier_reasonrank.versions import library_versions

from .model_card import model_card


def write_student(output_dir: str, settings: StudentSettings, *, configs: Sequence, data: dict, metrics: dict) -> None:
    """Write what makes the saved student self-describing, beside its weights (by the main process).

    That is its settings (``reasonrank_config.json``, which inference reads), its model card
    (``README.md``, with the metadata the Hub reads; an adapter or a whole model, as saved there) and
    its run card (``run_card.json``). Every known secret is masked in them.
    """
    if not is_main_process():
        return
    settings.save(output_dir)
    card = model_card(output_dir, settings, configs=configs, data=data, metrics=metrics,
                      adapter=(Path(output_dir) / "adapter_config.json").is_file())
    (Path(output_dir) / "README.md").write_text(scrub(card, config_secrets(*configs)))
    write_run_card(output_dir, stage=settings.stage, configs=configs, data=data, metrics=metrics)


def deferred_push(config: TrainingArguments) -> bool:
    """Whether the config asks to push to the Hub; the trainer is told not to.

    The student is pushed whole, with its settings and cards (see :func:`push_student`), once it is
    finished, rather than by the trainer as it saves.
    """
    push, config.push_to_hub = config.push_to_hub, False
    return push


def push_student(output_dir: str, config: TrainingArguments, *, stage: str) -> None:
    """Upload the finished student (weights, tokenizer, settings, cards; no checkpoints) to the Hub.

    The repository is ``hub_model_id`` (default: the folder's name), private when ``hub_private_repo``;
    the token is ``hub_token`` or ``$HF_TOKEN``.
    """
    if not is_main_process():
        return
    from huggingface_hub import create_repo, upload_folder

    repo_id = config.hub_model_id or Path(output_dir).name
    create_repo(repo_id, token=config.hub_token, private=config.hub_private_repo, exist_ok=True)
    # ref/: the adapter trl's GRPO (beta > 0) keeps as its reference when refining an adapter, a copy of the start
    upload_folder(repo_id=repo_id, folder_path=output_dir, token=config.hub_token,
                  commit_message=f"reasonrank-train {stage}",
                  ignore_patterns=["checkpoint-*", "training_args.bin", "ref/*"])


class SettingsCallback(TrainerCallback):
    """Writes the student's settings into each checkpoint, so that a checkpoint is a self-describing student too."""

    def __init__(self, settings: StudentSettings):
        """Keep the settings to write."""
        self.settings = settings

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: object) -> None:
        """Write the settings into the checkpoint just saved."""
        if state.is_world_process_zero:
            self.settings.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")


def write_run_card(output_dir: str, *, stage: str, configs: Sequence, data: dict, metrics: dict) -> Path:
    """Write ``run_card.json``: the stage, its configuration, the data it saw, its metrics and the library versions.

    The data is described with file hashes. Secrets never appear: fields declared with
    ``repr=False`` (API keys) are left out, and every known secret is masked wherever else it
    appears. Under ``accelerate launch``, the main process writes it.
    """
    from accelerate import PartialState

    path = Path(output_dir) / "run_card.json"
    if not is_main_process():
        return path
    card = {
        "stage": stage,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {type(c).__name__: _public_fields(c) for c in configs},
        "data": data,
        "metrics": metrics,
        "processes": PartialState().num_processes,
        "versions": {**library_versions(), "python": platform.python_version()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(scrub(json.dumps(card, indent=2, default=str), config_secrets(*configs)) + "\n")
    return path


def _public_fields(config: object) -> dict:
    values = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    hidden = {f.name for f in dataclasses.fields(config) if not f.repr}
    return {k: v for k, v in values.items() if k not in hidden}


def plot_curves(log_history: Sequence[dict], path: str, *, title: str) -> Path:
    """A PNG of the logged training curves: the loss, and every reward that was logged (by the main process)."""
    if not is_main_process():
        return Path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("loss", "reward") if any(k in entry for entry in log_history)]
    keys += sorted({k for entry in log_history for k in entry if k.startswith("rewards/") and k.endswith("/mean")})
    figure, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.5 * max(1, len(keys)), 3.2), squeeze=False)
    for axis, key in zip(axes[0], keys):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        axis.plot(*zip(*points), marker="o", markersize=3)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def is_main_process() -> bool:
    """Whether this is the process that writes files: the only one, or rank 0 under ``accelerate launch``."""
    from accelerate import PartialState

    return PartialState().is_main_process
