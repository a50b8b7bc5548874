"""Engines that turn prompts into explanations and label distributions."""
from .base import Backend, Judgements

__all__ = ["Backend", "Judgements"]
