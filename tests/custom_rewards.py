"""A reward of a user's own, named in a recipe by its import path (custom_rewards.brevity)."""


def brevity(completions, **kwargs) -> list[float]:
    """1 for an explanation of at most 20 words, else 0."""
    return [1.0 if len(completion.split("\n")[0].split()) <= 20 else 0.0 for completion in completions]


CALLS: list[list[tuple[str, str]]] = []
"""The (qid, docno) of every rollout each call of `recording` saw, call by call."""


def recording(completions, qid, docno, **kwargs) -> list[float]:
    """0 for every rollout; records which pairs' rollouts each call saw, to check what a batch holds."""
    CALLS.append(list(zip(qid, docno)))
    return [0.0] * len(completions)
