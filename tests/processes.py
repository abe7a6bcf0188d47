"""Real processes for tests: start, wait until they answer, stop everything.

Every process is started in its own session and stopped with its whole
process group, so nothing a test started outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests


def wait_for_http(url: str, *, timeout: float, proc: subprocess.Popen | None = None, ok=(200,), **kwargs) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            r = requests.get(url, timeout=2, **kwargs)
            if r.status_code in ok:
                return
            last = r.status_code
        except requests.RequestException as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last: {last})")


def start(cmd: list[str], *, log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab")
    return subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process (and its group), SIGKILL what is left after ``timeout``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def processes_under(path: Path) -> list[int]:
    """PIDs of processes whose working directory is inside ``path``."""
    found = []
    root = str(path.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            found.append(int(entry.name))
    return found


def jupyter_server(port: int, token: str, root: Path, *, base_url: str = "/", args=(), env=None, log: Path):
    """A real Jupyter server (with this package's extension) on ``port``."""
    cmd = [
        sys.executable, "-m", "jupyter_server",
        f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.token={token}", f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
        "--ServerApp.port_retries=0",
        *(["--allow-root"] if os.geteuid() == 0 else []),
        *args,
    ]
    proc = start(cmd, log=log, env=env, cwd=root)
    wait_for_http(f"http://127.0.0.1:{port}{base_url}api/status", timeout=60, proc=proc,
                  headers={"Authorization": f"token {token}"})
    return proc


REPO = Path(__file__).resolve().parent.parent


class LocalHub:
    """The real hub in local mode, from the repository's jupyterhub_config.py.

    Free loopback ports for the proxy, the hub API, the proxy API and the
    kubeai service; all state in ``state_dir``. :meth:`stop` ends the hub
    and checks nothing it started is left running.
    """

    def __init__(self, workdir: Path, *, env: dict | None = None, user_cmd_prefix=(), config_file: Path | None = None):
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.port, self.hub_port, self.proxy_api_port, self.service_port = (free_port() for _ in range(4))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "hub.log"
        self.env = {
            "KUBEAI_STATE_DIR": str(self.state_dir),
            "KUBEAI_SERVICE_PORT": str(self.service_port),
            "KUBEAI_MODE": "local",
            **(env or {}),
        }
        self.cmd = [
            *user_cmd_prefix,
            sys.executable, "-m", "jupyterhub",
            "-f", str(config_file or REPO / "jupyterhub_config.py"),
            f"--port={self.port}",
            f"--JupyterHub.hub_port={self.hub_port}",
            f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{self.proxy_api_port}",
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "LocalHub":
        self.proc = start(self.cmd, log=self.log, env=self.env, cwd=self.workdir)
        try:
            wait_for_http(self.url + "/hub/api", timeout=timeout, proc=self.proc)
            wait_for_http(self.url + "/services/kubeai/api/health", timeout=timeout, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError("the hub did not start; its log:\n" + self.log.read_text()[-5000:])
        return self

    @property
    def password(self) -> str:
        return (self.state_dir / "demo-password").read_text().strip()

    def login(self, username: str) -> requests.Session:
        """A browser-like session logged in to the hub as ``username``."""
        session = requests.Session()
        session.get(self.url + "/hub/login")
        r = session.post(
            self.url + "/hub/login",
            data={"username": username, "password": self.password, "_xsrf": session.cookies.get("_xsrf")},
            allow_redirects=False,
        )
        if r.status_code != 302:
            raise AssertionError(f"login as {username} failed: {r.status_code}")
        return session

    def token(self, username: str) -> str:
        """A hub API token for ``username``, made as the user would on the token page."""
        session = self.login(username)
        r = session.post(
            f"{self.url}/hub/api/users/{username}/tokens",
            json={"note": "tests", "expires_in": 3600},
            headers={"X-XSRFToken": session.cookies.get("_xsrf")},
        )
        r.raise_for_status()
        return r.json()["token"]

    def api(self, token: str, method: str, path: str, **kwargs) -> requests.Response:
        """Call the hub's REST API (``/hub/api/<path>``) with ``token``."""
        return requests.request(method, f"{self.url}/hub/api/{path}", headers={"Authorization": f"token {token}"}, **kwargs)

    def service_pids(self) -> list[int]:
        """PIDs of the kubeai service process(es) this hub started."""
        return [
            pid for pid in processes_under(self.workdir)
            if b"jupyter_kubeai.service" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]

    def stop(self) -> list[str]:
        """Stop the hub; return the processes that were still left (then killed), as "PID: command line"."""
        if self.proc is not None:
            stop(self.proc, timeout=30)
        # What the hub stopped may still be on its way out (a kernel its lab server shut down): give it a moment.
        deadline = time.monotonic() + 10
        while (pids := [pid for pid in processes_under(self.workdir) if pid != os.getpid()]) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = []
        for pid in pids:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                command = "?"
            left.append(f"{pid}: {command.strip()[:300]}")
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return left


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
