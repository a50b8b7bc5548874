"""The model card (``README.md``) a trained student carries: Hub metadata, how to use it, and how it was made."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import yaml

from pyterrier_reasonrank.redaction import SECRET_FIELDS
from pyterrier_reasonrank.settings import StudentSettings

TAGS = ["pyterrier", "pyterrier-reasonrank", "reranking", "information-retrieval", "text-ranking"]


def model_card(name: str, settings: StudentSettings, *, configs: Sequence, data: dict, metrics: dict,
               adapter: bool) -> str:
    """The text of the model card.

    Args:
        name: How the student is referred to in the usage example (its folder or Hub id).
        settings: The settings it is served with.
        configs: The run's configs; the card lists the options that differ from their defaults.
        data: The data it was trained on (files, hashes, counts), as in the run card.
        metrics: The run's metrics.
        adapter: A PEFT adapter (``library_name: peft``) rather than a whole model.
    """
    metadata = {"base_model": settings.base_model, "library_name": "peft" if adapter else "transformers",
                "pipeline_tag": "text-generation", "tags": [*TAGS, "trl", settings.stage or "student"]}
    where = f'adapter="{name}"' if adapter else f'"{name}"'
    usage = [f"ranker = ReasonRanker({where})                  # explain mode",
             f'first_cut = ReasonRanker({where}, mode="direct")',
             'pipeline = bm25 >> pt.text.get_text(dataset, "text") >> first_cut % 50 >> ranker']
    if "queries" in settings.tasks:
        usage.append(f"rewritten = QueryGenerator({where}) >> bm25 >> pt.rewrite.reset() >> "
                     'pt.text.get_text(dataset, "text") >> ranker')
    prompt_rows = "\n".join(f"| `{key}` | `{json.dumps(value)}` |" for key, value in settings.to_dict().items())
    recipe = {type(config).__name__: changed_options(config) for config in configs}
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# {Path(name).name}

A reasoning re-ranker for [PyTerrier](https://github.com/terrier-org/pyterrier), trained with
pyterrier-reasonrank ({settings.stage}) from `{settings.base_model}`. For a query and a document it
writes a short explanation, then a relevance label (0 irrelevant, 1 partially relevant, 2 relevant);
documents are ranked by the expected label read from the label tokens' probabilities.

Trained for: {", ".join(settings.tasks)}.

## Use

```python
import pyterrier as pt
from pyterrier_reasonrank import QueryGenerator, ReasonRanker

{chr(10).join(usage)}
```

The prompt settings it was trained with come with it (`reasonrank_config.json`), so it is served
with its training prompts, token for token:

| setting | value |
|---|---|
{prompt_rows}

## Training

Options that differ from their defaults:

```yaml
{yaml.safe_dump(recipe, sort_keys=False).strip()}
```

Data:

```json
{json.dumps(data, indent=2, default=str)}
```

Metrics:

```json
{json.dumps(metrics, indent=2, default=str)}
```
"""


def changed_options(config: object) -> dict:
    """The fields of a config dataclass that differ from their defaults (secret fields left out)."""
    changed = {}
    for option in dataclasses.fields(config):
        if not option.init or not option.repr:
            continue
        default = option.default_factory() if option.default_factory is not dataclasses.MISSING else option.default
        value = getattr(config, option.name)
        if value != default and option.name not in SECRET_FIELDS:
            changed[option.name] = json.loads(json.dumps(value, default=str))  # plain values (enums as their text)
    return changed
