"""What a training run leaves beside its model: a run card (JSON) and a PNG of its curves."""
from __future__ import annotations

import dataclasses
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pyterrier_reasonrank
from pyterrier_reasonrank.redaction import config_secrets, scrub


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
    import torch
    import transformers
    import trl

    card = {
        "stage": stage,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {type(c).__name__: _public_fields(c) for c in configs},
        "data": data,
        "metrics": metrics,
        "processes": PartialState().num_processes,
        "versions": {"pyterrier_reasonrank": pyterrier_reasonrank.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__, "torch": torch.__version__, "python": platform.python_version()},
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
