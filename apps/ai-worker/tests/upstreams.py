"""OpenAI-compatible model servers for the openai backend's tests.

Two were written by others and installed from PyPI (requirements-dev.txt): llmock, whose admin
API scripts faults per request (`/_llmock/scenario`) and whose journal (`/_llmock/requests`) says
what each client did (a stream it hung up on has `completed: false` and the chunks it was sent),
and mockllm, a plainer implementation of the stream. The one thing neither can do, a server that
never accepts a connection, is the fake below.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Llmock:
    """llmock on a free loopback port: echoes the question, one chunk per word every `chunk_delay_ms`."""

    def __init__(self, chunk_delay_ms: int = 20):
        self.port = _free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/v1"
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "llmock"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--response-style", "echo", "--stream-chunk-delay-ms", str(chunk_delay_ms), "--log-level", "warning"],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
        )
        _wait_up(f"{self.root}/_llmock/scenario", self.proc)

    def script(self, *behaviors: dict[str, Any]) -> None:
        """Queue behaviours for the next requests, e.g. {"type": "fail", "status": 429, "retry_after": 2}."""
        r = httpx.post(f"{self.root}/_llmock/scenario", json={"behaviors": list(behaviors)}, timeout=5)
        r.raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """The journal: one record per request (status, completed, chunks_sent, started_at/ended_at)."""
        return httpx.get(f"{self.root}/_llmock/requests", timeout=10).json()["requests"]

    def reset(self) -> None:
        httpx.post(f"{self.root}/_llmock/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()


class Mockllm:
    """mockllm on a free loopback port, streaming `answer` (one character per chunk) to any question.

    mockllm 0.0.8 looks a streamed request up twice (the prompt, then the answer found as if it
    were a prompt), so a stream always carries its default answer: that is where `answer` goes.
    """

    def __init__(self, answer: str):
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._dir = tempfile.TemporaryDirectory(prefix="mockllm-")
        path = Path(self._dir.name) / "responses.yml"
        lines = ["responses: {}", "defaults:", f'  unknown_response: "{answer}"', "settings:", "  lag_enabled: true", "  lag_factor: 50"]
        path.write_text("\n".join(lines) + "\n")
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "uvicorn", "mockllm.server:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self._dir.name,
            env={**os.environ, "MOCKLLM_RESPONSES_FILE": str(path)},
        )
        _wait_up(f"http://127.0.0.1:{self.port}/docs", self.proc)

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()
        self._dir.cleanup()


class FakeUnacceptingServer:
    """A fake model server, written here: it listens and never accepts, and its accept queue is
    full, so a new connection's SYN is dropped and the client's connect times out. (An address
    that drops packets would do the same, but tests only ever talk to loopback.)"""

    def __init__(self) -> None:
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(0)
        self.port = self._srv.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._fill: list[socket.socket] = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fill.append(c)

    def close(self) -> None:
        for c in self._fill:
            c.close()
        self._srv.close()
