"""An engine's OpenAI-compatible server as a process the pipeline owns.

`ManagedServer` starts a server command (trtllm-serve, `python -m foundry.bench.server`, or a user's
vLLM / Triton OpenAI frontend / NIM command) on a free port, waits until `GET /health` answers 200,
keeps its log in a file, and always stops it: SIGTERM to its process group, then SIGKILL after a
grace period, on success, on an exception and on Ctrl-C. The child also gets PR_SET_PDEATHSIG on
Linux, so even a SIGKILLed pipeline leaves no server behind.

A start-up failure (the process exits, /health never answers, the port is taken) raises
`ServerStartError` with the tail of the server's log, which is what a user needs to fix it.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from foundry.errors import FoundryError, InfrastructureError

LOG_TAIL_CHARS = 4000
_PR_SET_PDEATHSIG = 1


class ServerStartError(InfrastructureError):
    """The server did not become healthy; the message carries its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the context manager still stops it
        pass


def expand_command(template: str | list[str], values: dict[str, str]) -> list[str]:
    """A command template (a string split like a shell would, or a list) with `{engine_dir}`,
    `{tokenizer_dir}`, `{host}`, `{port}`, `{model_name}`, `{python}` filled in. An unknown
    placeholder is an error naming it, not a literal brace in the command line."""
    parts = shlex.split(template) if isinstance(template, str) else list(template)
    try:
        return [part.format(**values) for part in parts]
    except (KeyError, IndexError) as error:
        raise FoundryError(
            f"runtime.command: unknown placeholder {error} in {template!r}; use {', '.join('{' + k + '}' for k in sorted(values))}"
        ) from None


@dataclass
class ManagedServer:
    """`with ManagedServer(argv, port, log_path) as server: ... server.base_url ...`"""

    argv: list[str]
    port: int
    log_path: Path
    host: str = "127.0.0.1"
    startup_timeout_s: float = 600.0
    shutdown_grace_s: float = 10.0
    env: dict[str, str] | None = None
    health_path: str = "/health"
    process: subprocess.Popen | None = field(default=None, init=False)
    pid: int | None = field(default=None, init=False)  # kept after stop(), to check it is gone
    returncode: int | None = field(default=None, init=False)
    startup_s: float | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "ManagedServer":
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def start(self) -> None:
        if not port_is_free(self.port, self.host):
            raise ServerStartError(
                f"port {self.port} on {self.host} is already in use; set runtime.port to a free port or null "
                "(a free one is picked)"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.process = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **(self.env or {})},
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            except OSError as error:
                raise ServerStartError(
                    f"cannot start {self.argv[0]!r}: {error}; is it installed and on PATH?"
                ) from None
        self.pid = self.process.pid
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = self.base_url + self.health_path
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"{Path(self.argv[0]).name} exited with code {code} before it was healthy; its log "
                    f"({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if _healthy(url):
                return
            time.sleep(0.2)
        raise ServerStartError(
            f"{Path(self.argv[0]).name} did not answer {url} with 200 within {self.startup_timeout_s:g} s "
            f"(runtime.startup_timeout_s); its log ({self.log_path}) ends with:\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def require_alive(self, during: str, settle_s: float = 0.0) -> None:
        """Raise with the log's tail if the server died (e.g. mid-benchmark). settle_s: first wait
        that long for a server that may be dying — its clients see the connection drop before
        the process has exited, later still on a loaded machine."""
        if self.process is not None and settle_s > 0:
            try:
                self.process.wait(timeout=settle_s)
            except subprocess.TimeoutExpired:
                pass  # still serving
        if self.process is not None and self.process.poll() is not None:
            raise InfrastructureError(
                f"the engine's server ({Path(self.argv[0]).name}) died during {during} with exit code "
                f"{self.process.returncode}; its log ({self.log_path}) ends with:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after the grace period; idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            if process is not None:
                self.returncode = process.returncode
            return
        for sig, wait_s in ((signal.SIGTERM, self.shutdown_grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self.returncode = process.returncode

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-chars:]


# The servers measured here are local or named endpoints: never reached through an HTTP proxy.
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with NO_PROXY_OPENER.open(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
