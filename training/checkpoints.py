"""Where a killed training run picks up again."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from transformers import TrainingArguments

FRESH = ("no", "none", "false")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def resume_point(config: TrainingArguments) -> Optional[str]:
    """The checkpoint a run resumes from.

    ``resume_from_checkpoint`` names one; unset, a run resumes from the last complete checkpoint in
    its ``output_dir``, so that rerunning a killed command continues it; ``"no"`` starts afresh.

    Args:
        config: Trainer arguments (``output_dir``, ``resume_from_checkpoint``).
    """
    asked = config.resume_from_checkpoint
    if asked is not None:
        return None if str(asked).lower() in FRESH else asked
    checkpoint = last_complete_checkpoint(config.output_dir)
    if checkpoint is not None:
        print(f"resuming from {checkpoint}", flush=True)
    return checkpoint


def last_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The newest ``checkpoint-N`` folder whose trainer state was written whole.

    The trainer writes that state last, so a run killed while saving leaves a folder without it
    (or with a cut-off file); such a folder is passed over rather than resumed from.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    numbered = sorted(((int(m.group(1)), path) for path in folder.iterdir()
                       if path.is_dir() and (m := _CHECKPOINT.match(path.name))), reverse=True)
    for _, path in numbered:
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        return str(path)
    return None
