"""A student's settings: everything that shaped its input in training, saved beside it and read back.

Training writes ``reasonrank_config.json`` beside every adapter or model it saves; ``ReasonRanker``
and ``QueryGenerator`` read it from the adapter (or model) they load and take their prompt settings
from it, so that the student is served with the prompts it was trained on, token for token. An
explicit argument wins, with a warning when it differs from training; a file written for a prompt
format this library does not know is refused.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.hub import model_file
from pyterrier_reasonrank.numeric import positive_int, positive_number
from pyterrier_reasonrank.prompts import (
    DEFAULT_MAX_DOC_TOKENS,
    DEFAULT_MAX_QUERY_TOKENS,
    DEFAULT_MAX_QUESTION_TOKENS,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    LABEL_NAMES,
    MODES,
    TEMPLATE_VARIABLES,
    Mode,
    PromptEncoder,
    QueryPromptEncoder,
    chat_template_sha256,
)
from pyterrier_reasonrank.versions import __version__

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FILENAME = "reasonrank_config.json"


@dataclass(frozen=True)
class StudentSettings:
    """What a student was trained with.

    Attributes:
        max_query_tokens: Queries were cut to this many tokens.
        max_doc_tokens: Documents were cut to this many tokens.
        max_question_tokens: Questions (query generation) were cut to this many tokens.
        template_variables: The chat-template variables besides the conversation (the date,
            thinking off; a student trained before thinking was pinned has the date only).
        tasks: What it was trained for: ``"explain"``, ``"direct"``, ``"queries"``.
        base_model: The model the adapter (or fine-tuned model) was trained from.
        stage: The training stage that wrote it (``"distill"``, ``"refine-rwsft"``...).
        chat_template_sha256: The hash of the chat template it was trained with.
        labels: The label scale, label -> name.
        label_temperature: Per mode (``"explain"``, ``"direct"``), what divides the label logits
            before scores are read: a calibration fitted on held-out judgements (``reasonrank
            calibrate``); a mode not listed is served as it is (1).
        format_version: The prompt format version (:data:`~pyterrier_reasonrank.prompts.FORMAT_VERSION`).
    """

    max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS
    max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS
    max_question_tokens: int = DEFAULT_MAX_QUESTION_TOKENS
    template_variables: dict = field(default_factory=lambda: dict(TEMPLATE_VARIABLES))
    tasks: tuple = ("explain",)
    base_model: Optional[str] = None
    stage: Optional[str] = None
    chat_template_sha256: Optional[str] = None
    labels: dict = field(default_factory=lambda: {str(k): v for k, v in LABEL_NAMES.items()})
    label_temperature: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def encoder(self, tokenizer: PreTrainedTokenizerBase, mode: Mode = "explain") -> PromptEncoder:
        """The judging prompt encoder these settings describe."""
        return PromptEncoder(tokenizer, mode, max_query_tokens=self.max_query_tokens,
                             max_doc_tokens=self.max_doc_tokens, template_variables=self.template_variables,
                             format_version=self.format_version)

    def query_encoder(self, tokenizer: PreTrainedTokenizerBase) -> QueryPromptEncoder:
        """The query-generation prompt encoder these settings describe."""
        return QueryPromptEncoder(tokenizer, max_question_tokens=self.max_question_tokens,
                                  template_variables=self.template_variables)

    def to_dict(self) -> dict:
        """The settings as JSON-ready values."""
        return {**dataclasses.asdict(self), "tasks": list(self.tasks)}

    def save(self, folder: Union[str, Path]) -> Path:
        """Write ``reasonrank_config.json`` into ``folder``."""
        path = Path(folder) / FILENAME
        path.write_text(json.dumps({**self.to_dict(), "pyterrier_reasonrank": __version__}, indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "the settings") -> "StudentSettings":
        """Settings from :meth:`to_dict`'s values.

        Raises:
            InputError: A prompt format version or a label scale this library does not know, or a number
                out of its range (a size that is not a positive integer, a temperature that is not
                finite and above 0), named with ``source``.
        """
        saved_by = values.get("pyterrier_reasonrank")
        if isinstance(saved_by, str) and _newer(saved_by, __version__):
            # As sentence-transformers does: a newer library may have saved what this one cannot serve alike.
            warnings.warn(f"{source} was saved by pyterrier-reasonrank {saved_by}, newer than this {__version__}; "
                          "upgrade pyterrier-reasonrank if it is not served as it was trained", stacklevel=3)
        version = values.get("format_version")
        if version not in FORMAT_VERSIONS:
            raise InputError(f"{source} was trained with prompt format version {version!r}, and this "
                             f"pyterrier-reasonrank knows versions {list(FORMAT_VERSIONS)}: install the version it "
                             "was trained with (its model card says which)")
        known = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in values.items() if k in known})
        if settings.labels != cls().labels:
            raise InputError(f"{source} was trained with the label scale {settings.labels}, not {cls().labels}")
        sizes = {name: positive_int(f"{source}: {name}", getattr(settings, name))
                 for name in ("max_query_tokens", "max_doc_tokens", "max_question_tokens")}
        temperatures = settings.label_temperature
        if not isinstance(temperatures, dict) or not set(temperatures) <= set(MODES):
            raise InputError(f"{source}: label_temperature must map modes ({', '.join(MODES)}) to temperatures "
                             f"above 0, got {temperatures!r}")
        temperatures = {mode: positive_number(f"{source}: label_temperature[{mode!r}]", temperature)
                        for mode, temperature in temperatures.items()}
        return dataclasses.replace(settings, tasks=tuple(settings.tasks), label_temperature=temperatures, **sizes)



def _newer(version: str, than: str) -> bool:
    """Whether ``version`` is a newer release than ``than`` (an unreadable version is not)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) > Version(than)
    except InvalidVersion:
        return False


def read_settings(source: Optional[str]) -> Optional[StudentSettings]:
    """The settings saved with a student: a local directory, or a Hub id.

    Returns:
        ``None`` for a model that was not trained by this library (no settings file).

    Raises:
        InputError: The file is not valid, or was written for another prompt format version.
    """
    if source is None:
        return None
    path = model_file(source, FILENAME, otherwise="it is served with the library's default prompt settings, "
                      "as a model not trained by this library")
    if path is None:
        return None
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error})") from None
    return StudentSettings.from_dict(values, source=str(source))


def serving_settings(source: Optional[str], tokenizer: PreTrainedTokenizerBase, *, who: str, tasks: Sequence[str],
                     **options: object) -> StudentSettings:
    """The prompt settings to serve a model with: those it was trained with, the given options in place.

    Each option given (not ``None``) wins; one that differs from what the student was trained with
    is used with a warning. A warning also says when the student was not trained for one of
    ``tasks``, or when the tokenizer's chat template is not the one it was trained with. A model without settings
    (not trained by this library) gets the library's defaults, the given options in place.

    Args:
        source: Where the student is: its adapter, or its model (directory or Hub id).
        tokenizer: The tokenizer it is served with.
        who: The one asking, for the warnings (``"ReasonRanker"``).
        tasks: What it is asked to do: ``"explain"``, ``"direct"``, ``"queries"``.
        options: Prompt settings given by the user (``max_doc_tokens=...``).

    Raises:
        InputError: The student's settings are for a prompt format this library does not know.
    """
    given = {name: value for name, value in options.items() if value is not None}
    trained = read_settings(source)
    if trained is None:
        return dataclasses.replace(StudentSettings(), **given)
    differing = {name: value for name, value in given.items() if getattr(trained, name) != value}
    if differing:
        was = ", ".join(f"{name}={getattr(trained, name)!r}" for name in differing)
        now = ", ".join(f"{name}={value!r}" for name, value in differing.items())
        warnings.warn(f"{who}: the student was trained (or calibrated) with {was}; serving it with {now} as asked",
                      stacklevel=3)
    for task in tasks:
        if task not in trained.tasks:
            warnings.warn(f"{who}: the student was trained for {list(trained.tasks)}, not {task!r}; it answers a "
                          "prompt it never saw in training", stacklevel=3)
    if trained.chat_template_sha256 not in (None, chat_template_sha256(tokenizer)):
        warnings.warn(f"{who}: the tokenizer's chat template is not the one the student was trained with; its "
                      "prompts differ from its training prompts", stacklevel=3)
    return dataclasses.replace(trained, **given)

