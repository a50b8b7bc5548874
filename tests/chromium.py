"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no dependency.

Chromium reads commands from its file descriptor 3 and writes answers and events to 4, each a JSON
message ended by a NUL byte. :class:`Browser` opens one tab and can load a page, wait for its load
event, and evaluate JavaScript in it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import pytest


def chromium_executable() -> Optional[str]:
    """Debian's ``chromium`` (installed by scripts/setup.sh), or another Chromium on the PATH."""
    return next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)


def require_chromium() -> str:
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Chromium is not installed: scripts/setup.sh installs Debian's package chromium (as root); "
                    "where apt-get cannot run, install it by hand to run the browser tests")
    return executable


class Browser:
    """One headless Chromium with one tab, at a given window width."""

    def __init__(self, executable: str, width: int = 800, height: int = 1000):
        self.profile = tempfile.mkdtemp(prefix="reasonrank-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def descriptors():  # in the child: its ends of the pipes as 3 (commands) and 4 (answers)
            # The lower first, so that neither dup2 overwrites the other's copy.
            commands, answers = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(commands, 3)
            os.dup2(answers, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.process = subprocess.Popen(
            [executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=descriptors, pass_fds=(3, 4))  # the others are closed after preexec_fn
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.command("Page.enable")
        self.command("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
              timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def command(self, method: str, params: Optional[dict] = None, timeout: float = 30) -> dict:
        """A DevTools command in the tab; returns its result."""
        return self._send(method, params, self.session, timeout)

    def load(self, path: Path, timeout: float = 30) -> None:
        """Navigate to a file and wait for its load event."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.command("Page.navigate", {"url": Path(path).resolve().as_uri()})
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(deadline))

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-able values)."""
        result = self.command("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self._send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for descriptor in (self._to_browser, self._from_browser):
            os.close(descriptor)
        shutil.rmtree(self.profile, ignore_errors=True)
