"""A real vLLM OpenAI-compatible server (``vllm.entrypoints.openai.api_server``), on loopback, for tests.

It runs the same vLLM code as ``vllm serve`` (the ``vllm`` console script of the CPU build cannot
find its distribution, so the module is run), on CPU, with a small KV cache.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

ENVIRONMENT = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
"""A small KV cache (GiB), and nothing fetched or reported over the network."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` for ``model``, until closed.

    Args:
        model: The model's directory.
        log: Where the server's output goes.
        adapter: A LoRA adapter served as ``student`` (``--lora-modules student=...``).
        caching: Prefix caching on (each reply reports the prompt tokens its cache served:
            ``--enable-prompt-tokens-details``).
        dtype: The weights' dtype.
        eager: No compilation (it starts faster; the results are the same).
        timeout: Seconds to wait for it to answer ``/health``.
        wait: Wait for it here; else :meth:`wait` does, so that the caller works while it starts.
        worker_in_engine: Run the engine's worker in the engine's process (``--distributed-executor-backend
            uni``: one process fewer to start, 20 s of a 57 s start here); else in a process of its own,
            as ``vllm serve`` does by default (what a benchmark of serving measures).
        label_reader: Start it with the logits processor that writes the label where an explanation ends
            (``--logits-processors``, backends/label_reader.py).
        block_size: Tokens per block of its KV cache, the unit its prefix cache shares (default: vLLM's).
        dev_mode: Open vLLM's development endpoints (``VLLM_SERVER_DEV_MODE``), for :meth:`reset_prefix_cache`.
    """

    def __init__(self, model: Path, log: Path, *, adapter: Optional[Path] = None, caching: bool = True,
                 dtype: str = "float32", eager: bool = True, timeout: float = 400.0, wait: bool = True,
                 worker_in_engine: bool = True, label_reader: bool = False, block_size: Optional[int] = None,
                 dev_mode: bool = False):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                "--served-model-name", "base", "--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype,
                "--enable-prefix-caching" if caching else "--no-enable-prefix-caching", "--logprobs-mode",
                "processed_logprobs", "--max-model-len", "2048", "--disable-log-stats",
                "--enable-prompt-tokens-details"]
        if label_reader:
            args += ["--logits-processors", "pyterrier_reasonrank.backends.label_reader:LabelReader"]
        if block_size is not None:
            args += ["--block-size", str(block_size)]
        if worker_in_engine:
            args += ["--distributed-executor-backend", "uni"]
        if eager:
            args.append("--enforce-eager")
        if adapter is not None:
            args += ["--enable-lora", "--lora-modules", f"student={adapter}", "--max-lora-rank", "8"]
        environment = {**os.environ, **ENVIRONMENT, "VLLM_SERVER_DEV_MODE": str(int(dev_mode))}
        if label_reader:  # as README serves it: the label reader is a processor of vLLM's V1 model runner
            environment["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        self.process = subprocess.Popen(args, env=environment, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.deadline = time.monotonic() + timeout
        if wait:
            self.wait()

    def wait(self) -> None:
        """Return once the server answers ``/health`` (at once if it does already)."""
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > self.deadline:
                self.close()
                raise RuntimeError(f"the vLLM server did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(1)

    def reset_prefix_cache(self) -> None:
        """Empty the server's prefix cache (``dev_mode`` only)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/reset_prefix_cache", method="POST")
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert json.load(reply) == {"success": True}

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                return True
        except OSError:
            return False

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
