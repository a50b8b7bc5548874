"""Where a killed training run picks up again."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pyterrier_reasonrank.errors import InputError

if TYPE_CHECKING:
    from transformers import TrainingArguments

FRESH = ("no", "none", "false")
LAST = ("true", "yes", "last")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def resume_point(config: TrainingArguments) -> Optional[str]:
    """The checkpoint a run resumes from, checked before any work.

    ``resume_from_checkpoint`` names one (``"true"``: the last complete one in ``output_dir``);
    unset, a run resumes from the last complete checkpoint in its ``output_dir``, so that rerunning
    a killed command continues it; ``"no"`` starts afresh.

    Args:
        config: Trainer arguments (``output_dir``, ``resume_from_checkpoint``).

    Raises:
        InputError: The checkpoint named is not a complete checkpoint folder, or ``"true"`` found none.
    """
    asked = config.resume_from_checkpoint
    if asked is not None and str(asked).lower() in FRESH:
        return None
    if asked is not None and str(asked).lower() not in LAST:
        if not _complete(Path(asked)):
            raise InputError(f"resume_from_checkpoint: {asked} is not a checkpoint folder with its trainer state "
                             "(trainer_state.json); name a checkpoint-N folder of an earlier run, or 'no'")
        return str(asked)
    checkpoint = last_complete_checkpoint(config.output_dir)
    if checkpoint is None and asked is not None:
        raise InputError(f"resume_from_checkpoint {asked}: there is no complete checkpoint in {config.output_dir}")
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
    return next((str(path) for _, path in numbered if _complete(path)), None)


def _complete(checkpoint: Path) -> bool:
    """Whether a checkpoint folder's trainer state was written whole."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return True
