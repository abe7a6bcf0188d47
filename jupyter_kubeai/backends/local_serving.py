"""``LocalServing``: inference services as local runtime processes (local mode).

Each service is one ``python -m jupyter_kubeai.serving`` process on a free
loopback port, started detached (it outlives the hub service) and
recorded in ``<state_dir>/<name>.json``, so a restarted hub service finds
it again. The hub service proxies ``/services/kubeai/serve/<name>/`` to
it (a stable, authenticated URL); the model answers there under the
service's name (``serve/<name>/v1/models/<name>:predict``), as on Kubernetes.

Switching version (update, rollback) never fails a request: the new
process starts on another port and must answer ``/v2/health/ready``; only
then does the route switch, and the old process gets SIGTERM a moment
later, which makes it finish the requests it has and exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient
from traitlets import Float, Integer, Unicode, default

from ..errors import InvalidInput, Unavailable
from ..jobs.local import pid_alive
from ..jobs.local_commands import free_port
from ..jobs.supervise import tail
from ..local.environment import user_code_env
from ..local.spawner import count_local_gpus
from ..models.deploy import ServingBackend
from ..models.spec import DeploymentSpec, ServiceStatus

#: Seconds between switching the route and stopping the old process.
SWITCH_GRACE = 1.0


def runtime_command(spec: DeploymentSpec, port: int) -> list[str]:
    """The model server's command line for one service on a loopback ``port``.

    The model answers under the service's name (``/v1/models/<service>``),
    as on Kubernetes (see :func:`jupyter_kubeai.kube.serving.runtime_command`).
    """
    return [
        sys.executable, "-m", "jupyter_kubeai.serving", "--model-dir", spec.model_path, "--name", spec.name,
        "--port", str(port), "--host", "127.0.0.1", "--version", str(spec.version),
        "--max-batch-size", str(spec.max_batch_size), "--max-latency-ms", f"{spec.max_latency_ms:g}",
    ]


class LocalServing(ServingBackend):
    name = "local"

    state_dir = Unicode(
        config=True,
        help="""Where the running services are recorded (and their logs). Default: ``$KUBEAI_STATE_DIR/services``.""",
    )

    @default("state_dir")
    def _default_state_dir(self):
        return os.path.join(os.environ.get("KUBEAI_STATE_DIR", ".kubeai"), "services")

    ready_timeout = Float(120.0, config=True, help="""Seconds a new runtime process has to become ready.""")

    local_gpus = Integer(config=True, help="""GPUs this machine offers. Default: counted with ``nvidia-smi -L``.""")

    @default("local_gpus")
    def _default_local_gpus(self):
        return count_local_gpus()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.current: dict[str, dict] = {}
        self._children: dict[int, subprocess.Popen] = {}

    # --- records -------------------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return Path(self.state_dir) / f"{name}.json"

    def _save(self, name: str, entry: dict | None) -> None:
        path = self._record_path(name)
        if entry is None:
            self.current.pop(name, None)
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)
        self.current[name] = entry

    async def start(self) -> None:
        for path in sorted(Path(self.state_dir).glob("*.json")) if Path(self.state_dir).is_dir() else []:
            try:
                self.current[path.stem] = json.loads(path.read_text())
            except ValueError:
                continue

    # --- processes -----------------------------------------------------------------------------

    def model_path(self, share_root: str, relative: str) -> str:
        return str(Path(share_root).absolute() / relative)  # the same machine: the service's own path

    def _check(self, spec: DeploymentSpec) -> None:
        if spec.replicas != 1 or spec.max_replicas > 1:
            raise InvalidInput("Local mode runs one process per service; replicas and autoscaling need a cluster.")
        if spec.selection.gpus > self.local_gpus:
            raise InvalidInput(f"This service needs {spec.selection.gpus} GPU(s) but this machine has "
                               f"{self.local_gpus or 'none'}; pick a CPU size.")
        if not Path(spec.model_path).is_dir():
            raise InvalidInput(f"The model's folder {spec.model_path} is missing from the registry.")

    async def _launch(self, spec: DeploymentSpec) -> dict:
        port = free_port()
        log_path = Path(self.state_dir) / "logs" / f"{spec.name}-v{spec.version}-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = runtime_command(spec, port)
        with open(log_path, "ab") as log:
            # A model folder may bring its own predictor.py: user code, without the service's token.
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=user_code_env())
        self._children[proc.pid] = proc
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.ready_timeout
        client = AsyncHTTPClient()
        while True:
            if proc.poll() is not None:
                raise Unavailable(f"The model server for {spec.name!r} exited ({proc.returncode}):\n{tail(log_path)}")
            try:
                response = await client.fetch(url + "/v2/health/ready", raise_error=False, request_timeout=2)
                if response.code == 200:
                    break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self._terminate(proc.pid)
                raise Unavailable(f"The model server for {spec.name!r} was not ready in {self.ready_timeout:.0f} s:\n"
                                  f"{tail(log_path)}")
            await asyncio.sleep(0.1)
        return {"pid": proc.pid, "port": port, "url": url, "version": spec.version, "log": str(log_path),
                "model_dir": spec.model_path}

    def _terminate(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)  # the runtime drains in-flight requests, then exits
        except ProcessLookupError:
            pass
        proc = self._children.get(pid)
        if proc is not None:
            asyncio.get_running_loop().run_in_executor(None, proc.wait)  # reap it once it ends

    # --- the interface ---------------------------------------------------------------------------

    async def deploy(self, spec: DeploymentSpec) -> dict:
        self._check(spec)
        entry = await self._launch(spec)
        self._save(spec.name, entry)
        return entry

    async def update(self, spec: DeploymentSpec) -> dict:
        self._check(spec)
        old = self.current.get(spec.name)
        entry = await self._launch(spec)  # the old one serves until the new one is ready
        self._save(spec.name, entry)
        if old is not None:
            asyncio.get_running_loop().call_later(SWITCH_GRACE, self._terminate, old["pid"])
        return entry

    async def delete(self, name: str) -> bool:
        entry = self.current.get(name)
        self._save(name, None)
        if entry is None:
            return False
        self._terminate(entry["pid"])
        return True

    async def status(self, name: str) -> ServiceStatus:
        entry = self.current.get(name)
        if entry is None:
            return ServiceStatus("Failed", reason="No model server is running for this service; update it to start one.")
        if not pid_alive(entry["pid"]):
            return ServiceStatus("Failed", version=entry["version"],
                                 reason=f"The model server stopped. Last lines:\n{tail(Path(entry['log']))}")
        return ServiceStatus("Ready", version=entry["version"], ready_replicas=1, url=entry["url"])
