"""What PyTerrier asks of a transformer, met once for the transformers that serve a student.

PyTerrier and the tools around it rebuild a transformer from its constructor's parameters
(``pt.inspect.transformer_attributes`` and ``transformer_apply_attributes``: pyterrier-alpha's
helpers, rank-cutoff fusion), tune one with ``set_parameter`` (``pt.GridSearch``), name a system by
``str()`` (``pt.Experiment`` without ``names``) and ask for a stage's output columns without running
it (``transform_outputs``). So a :class:`StudentTransformer`:

- lists as its attributes exactly its constructor's parameters (PyTerrier would otherwise read a
  private ``_x`` before ``x``), and rebuilds with the student of the one it copies, so a copy
  shares the loaded weights unless a student option (model, adapter, backend...) changes;
- checks a value set by ``set_parameter`` as the constructor does, and the value takes effect
  (a setting read when the model is loaded is read again);
- prints as its constructor call, from the signature: every parameter whose value is not the
  default, in signature order, so that two transformers that judge differently never print alike.
  A student's settings print as if given to the transformer (``ReasonRanker(Student("m"))`` prints
  as ``ReasonRanker('m')``: the same judge either way), unless the transformer does not take them.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Optional

import pyterrier as pt

from .errors import InputError
from .loading import DEFAULT_MODEL


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The parameters of a class's constructor, by name (without ``self``)."""
    return dict(list(inspect.signature(cls.__init__).parameters.items())[1:])


def signature_repr(instance: object, values: dict[str, Any]) -> str:
    """``Class('m', name=value, ...)``: the constructor's parameters whose ``values`` are not their defaults.

    In signature order; a parameter that may be given by position is shown by position while all
    before it are shown. ``verbose`` is left out, as pyterrier-alpha's ``transformer_repr`` does.
    """
    shown, positional = [], True
    for name, parameter in parameters(type(instance)).items():
        value = values[name]
        if name == "verbose" or _is_default(value, parameter.default):  # (verbose changes no output, as in pta)
            positional = False
            continue
        by_position = positional and parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        shown.append(repr(value) if by_position else f"{name}={value!r}")
    return f"{type(instance).__name__}({', '.join(shown)})"


def _is_default(value: Any, default: Any) -> bool:
    if default is inspect.Parameter.empty:
        return False
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, default)):
        return value == default  # 1 and 1.0 alike (a checked option is converted); True is not 1
    try:
        return type(value) is type(default) and bool(value == default)
    except (TypeError, ValueError):  # a value whose == is not a truth value (an array)
        return False


def short_name(student: Any) -> str:
    """The student as a results table shows it: its adapter, else its model (served name); a directory by its name."""
    name = (student.model if student.backend == "openai" else student.adapter or student.model) or DEFAULT_MODEL
    return Path(name).name if os.path.isdir(name) else name


class StudentTransformer(pt.Transformer):
    """A transformer that serves a :class:`~pyterrier_reasonrank.student.Student` and meets PyTerrier's contracts.

    Subclasses keep each constructor parameter as an attribute of the same name, and their student
    as ``_student``.
    """

    _student: Any

    def attributes(self) -> list[pt.inspect.TransformerAttribute]:
        """The constructor's parameters and their values (what ``pt.inspect.transformer_attributes`` returns)."""
        return [pt.inspect.TransformerAttribute(name, getattr(self, name), parameter.default, parameter.kind)
                for name, parameter in parameters(type(self)).items()]

    def apply_attributes(self, **changes: Any) -> StudentTransformer:
        """A copy with some constructor parameters changed (``pt.inspect.transformer_apply_attributes``).

        The copy judges with this transformer's student, sharing its loaded weights, unless one of
        the changes is a student option (``model``, ``adapter``, ``backend``...).

        Raises:
            InputError: A name that is not a parameter, or a value the constructor refuses.
        """
        values = {attribute.name: attribute.value for attribute in self.attributes()}
        unknown = [name for name in changes if name not in values]
        if unknown:
            raise InputError(f"{type(self).__name__} has no parameter {unknown[0]!r}; its parameters are "
                             f"{', '.join(values)}")
        values.update(changes)
        if not {"model", *parameters(type(self._student))} & set(changes):
            copy = type(self)(**{**values, "model": self._student})
            copy.model = values["model"]  # as given (a name, say), while the student is shared
            return copy
        return type(self)(**values)

    def set_parameter(self, name: str, value: Any) -> None:
        """Set one constructor parameter (as ``pt.GridSearch`` does), checked as the constructor checks it.

        The loaded student is kept unless ``name`` is one of its options; what was read from it when
        the model was loaded (prompt settings, label temperatures) is read again with the new value.

        Raises:
            InputError: A name that is not a parameter, or a value the constructor refuses.
        """
        self.__dict__.update(self.apply_attributes(**{name: value}).__dict__)

    def _shown_values(self) -> dict[str, Any]:
        """The values the repr shows: the parameters, with the student's settings as if given here."""
        values = {attribute.name: attribute.value for attribute in self.attributes()}
        student = self._student
        own = parameters(type(student))
        settings = {name: getattr(student, name) for name in own}
        set_ones = {name for name, value in settings.items() if not _is_default(value, own[name].default)}
        if set_ones <= set(values):
            values.update({name: value for name, value in settings.items() if name in values})
        else:  # a setting the transformer does not take (a server's address): the student shows it
            values["model"] = student
        return values

    def __repr__(self) -> str:
        return signature_repr(self, self._shown_values())

    def _named(self, label: str, depth: Optional[int] = None) -> str:
        """``label`` with the re-ranking depth and the student's short name, as a results table shows a system."""
        return f"{label}{'' if depth is None else f', top {depth}'} ({short_name(self._student)})"
