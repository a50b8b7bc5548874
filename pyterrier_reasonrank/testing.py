"""A tiny causal language model for offline tests.

:func:`build_tiny_model` writes a Llama-architecture model with random weights and a byte-level
BPE tokenizer trained here, with a ChatML chat template, to a directory — no network needed. It
loads like any Hugging Face checkpoint, so ``ReasonRanker(model=path)`` exercises the real loading,
prompting, generation and scoring code; its judgements are meaningless.
:func:`build_random_model` writes a random model with the shape of a real checkpoint (e.g.
Llama-3.2-1B) and the same tokenizer: it costs what the real model costs, for benchmarks.
:func:`counting_judgements` counts the prompts a ranker's model judges (to show what a store saves).

From the shell::

    python -m pyterrier_reasonrank.testing /tmp/tiny-model
"""
from __future__ import annotations

import argparse
import contextlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

from . import prompts

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .ranker import ReasonRanker

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_STYLE_TEMPLATE = (
    # As Llama 3.x templates do: the system block carries today's date unless `date_string` is given.
    "{{- bos_token }}"
    "{%- if date_string is not defined %}"
    "{%- if strftime_now is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
    "{%- else %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\nToday Date: ' + date_string + '\n\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
QWEN3_STYLE_TEMPLATE = (
    # As Qwen3's template does (its tools left out): the model thinks unless `enable_thinking` is
    # false, which ends the generation prompt with an empty think block; an assistant turn after the
    # last user turn is written with its think block (empty when it has none).
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}{%- set reasoning_content = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') %}"
    "{%- endif %}"
    "{%- if loop.last or reasoning_content %}"
    "{{- '<|im_start|>assistant\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' }}"
    "{{- content.lstrip('\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)
_CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHAT_TEMPLATES = {
    # name: (template, special tokens, beginning of text, end of turn, padding, plain added tokens)
    "chatml": (CHATML_TEMPLATE, _CHATML_TOKENS, "<|endoftext|>", "<|im_end|>", "<|pad|>", []),
    "llama3": (LLAMA3_STYLE_TEMPLATE, ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                       "<|eot_id|>", "<|pad|>"], "<|begin_of_text|>", "<|eot_id|>", "<|pad|>", []),
    # Qwen3's think delimiters are added tokens that are not special.
    "qwen3": (QWEN3_STYLE_TEMPLATE, _CHATML_TOKENS, "<|endoftext|>", "<|im_end|>", "<|pad|>", ["<think>", "</think>"]),
}
"""The chat templates a tiny model can have: ChatML (Qwen-style), a Llama-3-style one that writes
today's date into its system block, and a Qwen3-style one that thinks unless ``enable_thinking`` is
false (with ``<think>`` and ``</think>`` single tokens that are not special, as in Qwen3)."""


@contextlib.contextmanager
def counting_judgements(ranker: ReasonRanker) -> Iterator[list[int]]:
    """Count the prompts the ranker's model judges while the block runs.

    Yields:
        A list that gets the size of every batch sent to the model (each explanation drawn counts
        once); ``sum`` of it is the number of model calls the block made.
    """
    backend = ranker.load().student.engine
    original, counted = backend.judge, []

    def counting(prompts: Sequence, *args, **kwargs):  # noqa: ANN202
        counted.append(len(prompts))
        return original(prompts, *args, **kwargs)

    backend.judge = counting
    try:
        yield counted
    finally:
        del backend.judge


def tokenizer_corpus() -> list[str]:
    """Texts the tiny tokenizer is trained on: the prompt format and the bundled demo collection."""
    demo = resources.files("pyterrier_reasonrank") / "data" / "demo"
    documents = [json.loads(line)["text"] for line in (demo / "docs.jsonl").read_text().splitlines()]
    queries = [line.split("\t", 1)[1] for line in (demo / "topics.tsv").read_text().splitlines()]
    formats = [prompts.INSTRUCTIONS[mode] for mode in prompts.MODES]
    responses = [prompts.format_response(doc[:80], label) for doc in documents for label in prompts.LABELS]
    return formats + queries + documents + responses


def build_tiny_model(path: Union[str, Path], *, seed: int = 0, vocab_size: int = 4096, hidden_size: int = 64,
                     num_layers: int = 2, num_heads: int = 4, initializer_range: Optional[float] = None,
                     chat_template: str = "chatml") -> Path:
    """Write a tiny random Llama-style causal LM and its tokenizer to ``path``.

    Args:
        path: Directory to write (created if needed).
        seed: Seed for the random weights; the tokenizer is deterministic.
        vocab_size: Largest tokenizer vocabulary (byte-level BPE, so any text can be encoded; the small
            training corpus gives about 1,700 tokens).
        hidden_size: Width of the model.
        num_layers: Number of transformer layers.
        num_heads: Number of attention heads (half as many key/value heads).
        initializer_range: Standard deviation of the random weights. Default: 0.2 at width 64 (larger
            than the usual 0.02, so that greedy decoding is decisive rather than a coin toss between
            near-equal logits), scaled by ``sqrt(64 / hidden_size)`` so that a wider model starts
            with the same scale of activations (0.2 at width 256 makes attention nearly one-hot).
        chat_template: ``"chatml"``, ``"llama3"`` or ``"qwen3"`` (see :data:`CHAT_TEMPLATES`).

    Returns:
        The directory, loadable with ``from_pretrained`` and ``ReasonRanker(model=...)``.
    """
    from transformers import LlamaForCausalLM

    if initializer_range is None:
        initializer_range = 0.2 * (64 / hidden_size) ** 0.5
    return _build(LlamaForCausalLM, path, seed=seed, vocab_size=vocab_size, hidden_size=hidden_size,
                  num_layers=num_layers, num_heads=num_heads, initializer_range=initializer_range,
                  chat_template=chat_template)


def build_tiny_reward_model(path: Union[str, Path], *, seed: int = 0) -> Path:
    """Write a tiny random Llama-style sequence-classification model (one logit) and its tokenizer to ``path``.

    The model is a reward model with the same tokenizer as :func:`build_tiny_model`, for offline
    tests of reward-model rewards.
    """
    from transformers import LlamaForSequenceClassification

    return _build(LlamaForSequenceClassification, path, seed=seed, vocab_size=4096, hidden_size=64, num_layers=2,
                  num_heads=4, initializer_range=0.2, num_labels=1)


ARCHITECTURES = {
    # The shapes of real checkpoints (their config.json), vocabulary included, so that a random model
    # of one costs what the real model costs: for throughput benchmarks.
    "qwen2.5-0.5b": ("Qwen2ForCausalLM", dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0, max_position_embeddings=32768)),
    "qwen2.5-1.5b": ("Qwen2ForCausalLM", dict(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0, max_position_embeddings=32768)),
    "llama-3.2-1b": ("LlamaForCausalLM", dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, tie_word_embeddings=True, rope_theta=500000.0,
        max_position_embeddings=131072)),
    "llama-3.2-3b": ("LlamaForCausalLM", dict(
        vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, rope_theta=500000.0,
        max_position_embeddings=131072)),
}


def build_random_model(path: Union[str, Path], architecture: str, *, seed: int = 0, dtype: str = "bfloat16",
                       device: str = "cpu") -> Path:
    """Write a randomly initialised model with the shape of a real checkpoint, and the tiny tokenizer.

    The model computes exactly what the real one does per token (its vocabulary size is kept, the
    tokenizer just uses the first ids), so it measures speed and memory without the real weights.

    Args:
        path: Directory to write (created if needed).
        architecture: One of :data:`ARCHITECTURES`, e.g. ``"llama-3.2-1b"``.
        seed: Seed for the random weights.
        dtype: The dtype the weights are saved in.
        device: Where the weights are initialised (``"cuda"`` is much faster for billions of parameters).
    """
    import torch
    import transformers

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
    class_name, shape = ARCHITECTURES[architecture]
    model_class = getattr(transformers, class_name)
    path = Path(path)
    tokenizer = _tokenizer(path, vocab_size=4096)
    config = model_class.config_class(**shape, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_class(config).to(getattr(torch, dtype))
    model.save_pretrained(path)
    return path


def _tokenizer(path: Path, *, vocab_size: int, chat_template: str = "chatml"):
    """Train the byte-level BPE tokenizer with a chat template and save it to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    if chat_template not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {chat_template!r}; choose one of {sorted(CHAT_TEMPLATES)}")
    template, special_tokens, bos, eos, pad, plain_tokens = CHAT_TEMPLATES[chat_template]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(tokenizer_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token=pad,
                                        unk_token=None, model_max_length=4096)
    tokenizer.add_tokens(plain_tokens)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(path)
    return tokenizer


def _build(model_class: type[PreTrainedModel], path: Union[str, Path], *, seed: int, vocab_size: int,
           hidden_size: int, num_layers: int, num_heads: int, initializer_range: float, chat_template: str = "chatml",
           **config_options: object) -> Path:
    import torch
    from transformers import LlamaConfig

    path = Path(path)
    tokenizer = _tokenizer(path, vocab_size=vocab_size, chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=4096, initializer_range=initializer_range, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **config_options,
    )
    torch.manual_seed(seed)
    model_class(config).save_pretrained(path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the tiny model into the directory given on the command line and print its path."""
    parser = argparse.ArgumentParser(prog="python -m pyterrier_reasonrank.testing",
                                     description=build_tiny_model.__doc__.split("\n")[0])
    parser.add_argument("path", help="directory to write the model to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chat-template", choices=sorted(CHAT_TEMPLATES), default="chatml")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.path, seed=args.seed, chat_template=args.chat_template))


if __name__ == "__main__":
    main()
