"""``LocalServing``: inference services as local runtime processes (local mode).

Each service is one ``python -m jupyter_kubeai.serving`` process on a free
loopback port, in its own process group. The hub service proxies
``/services/kubeai/serve/<name>/`` to it (a stable, authenticated URL); the
model answers there under the service's name
(``serve/<name>/v1/models/<name>:predict``), as on Kubernetes.

**Records.** Every process is recorded in ``<state_dir>/<name>.json`` (the
service's own state, never a folder users write) the moment it is started,
before it is ready: its pid, start time and process group
(:mod:`jupyter_kubeai.local.processes`), and what is needed to start it again.
A process is signalled only while it still has that identity, so a reused pid
is never hit. A service being deployed or updated when the hub service was
killed is therefore still found: ``DELETE`` stops it, whoever started it.

**Lifetime.** Model servers are children of the hub service and stop with it
(``stop_with_service``, the default): stopping the hub stops them, and the
next start brings back every recorded one (:meth:`LocalServing.reconcile`),
re-adopting those still alive (the service was killed, not stopped) and
stopping those whose service no longer exists. Exited children are reaped:
no zombie is left. With ``stop_with_service = False`` they keep serving while
the hub service is down and are re-adopted at its next start.

**Failures.** A model server that dies is started again after a pause that
doubles each time (``restart_backoff``, at most ``max_restarts`` times in a
row; a server that stayed up ``stable_seconds`` starts a new count). After
that the service is Failed with the server's last log lines, until its owner
restarts it (:meth:`LocalServing.restart`, ``POST api/services/<name>/restart``)
or updates it.

Switching version (update, rollback, restart) never fails a request: the new
process starts on another port and must answer ``/v2/health/ready``; only
then does the route switch, and the old process gets SIGTERM a moment later,
which makes it finish the requests it has and exit.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient
from traitlets import Bool, Float, Integer, Unicode, default

from ..errors import Conflict, InvalidInput, Unavailable
from ..jobs.local_commands import free_port
from ..jobs.supervise import tail
from ..local.environment import env_allowlist_trait, user_code_env
from ..local.processes import ProcessIdentity, alive, identify, is_ours, read_record, stop_group, write_record
from ..local.spawner import count_local_gpus
from ..models.deploy import ServingBackend
from ..models.spec import DeploymentSpec, ServiceStatus

#: Seconds between switching the route and stopping the old process.
SWITCH_GRACE = 1.0
#: In a model server's command line: what tells it from any other process with a reused pid.
MARKER = "jupyter_kubeai.serving"
#: What a deploy returns (kept with the service's record in the store).
DETAILS = ("pid", "port", "url", "version", "log", "model_dir")


def runtime_command(spec: DeploymentSpec, port: int) -> list[str]:
    """The model server's command line for one service on a loopback ``port``.

    The model answers under the service's name (``/v1/models/<service>``),
    as on Kubernetes (see :func:`jupyter_kubeai.kube.serving.runtime_command`).
    """
    return launch_command(launch_args(spec), port)


def launch_args(spec: DeploymentSpec) -> dict:
    """What starting the service's model server again needs (kept in its record)."""
    return {"name": spec.name, "model_path": spec.model_path, "version": spec.version,
            "max_batch_size": spec.max_batch_size, "max_latency_ms": spec.max_latency_ms}


def launch_command(launch: dict, port: int) -> list[str]:
    return [
        sys.executable, "-m", MARKER, "--model-dir", launch["model_path"], "--name", launch["name"],
        "--port", str(port), "--host", "127.0.0.1", "--version", str(launch["version"]),
        "--max-batch-size", str(launch["max_batch_size"]), "--max-latency-ms", f"{launch['max_latency_ms']:g}",
    ]


def _identity(entry: dict | None) -> ProcessIdentity | None:
    return ProcessIdentity.from_json(entry) if entry else None


def _servers(entry: dict) -> list[ProcessIdentity]:
    """Every model server a record names: the serving one, a pending one, and those retiring after a switch."""
    found = [_identity(entry), _identity(entry.get("pending")), *map(_identity, entry.get("retiring", ()))]
    return [identity for identity in found if identity is not None]


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

    env_allowlist = env_allowlist_trait("model servers")

    stop_with_service = Bool(
        True,
        config=True,
        help="""Stop the model servers when the hub service stops (and start them again when it starts).

        True (default): stopping the hub leaves nothing running; the services
        answer again once the hub service is back and their servers are ready.
        False: they keep running (and answering, for clients that reach them
        directly) while the hub service is down, and are re-adopted when it
        starts. Either way a server is never left unrecorded.""",
    )

    max_restarts = Integer(
        5,
        config=True,
        help="""How often in a row a model server that died is started again before its service is
        shown Failed (with its last log lines) for its owner to restart. 0: never restart.""",
    )

    restart_backoff = Float(
        1.0,
        config=True,
        help="""Seconds before the first restart of a model server that died; doubled at each further
        attempt (at most ``max_restart_delay``).""",
    )

    max_restart_delay = Float(60.0, config=True, help="""The longest pause before restarting a model server.""")

    stable_seconds = Float(
        60.0,
        config=True,
        help="""A model server that stayed up this long has its restart count reset: a crash after a
        day of serving is not the fifth of a crash loop.""",
    )

    check_interval = Float(1.0, config=True, help="""Seconds between checks that the model servers still run.""")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: service name -> its record (as in ``<state_dir>/<name>.json``)
        self.current: dict[str, dict] = {}
        #: pid -> Popen of the model servers this process started, to reap them
        self._children: dict[int, subprocess.Popen] = {}
        #: service name -> the task starting its server again
        self._relaunching: dict[str, asyncio.Task] = {}
        self._watcher: asyncio.Task | None = None
        #: the timers that stop a switched-from server once its grace is over
        self._retirements: set[asyncio.TimerHandle] = set()

    # --- records -------------------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return Path(self.state_dir) / f"{name}.json"

    def _save(self, name: str, entry: dict | None) -> None:
        path = self._record_path(name)
        if entry is None:
            self.current.pop(name, None)
            path.unlink(missing_ok=True)
            return
        write_record(path, entry)
        self.current[name] = entry

    def _reload(self, name: str) -> dict | None:
        """The record as on disk now (another service process may have changed or removed it)."""
        entry = read_record(self._record_path(name))
        if entry is None:
            self.current.pop(name, None)
        else:
            self.current[name] = entry
        return entry

    async def start(self) -> None:
        """Read the records, re-adopt what still runs, and watch the servers from now on.

        A record whose server is gone is started again by the watcher (right
        away when it was stopped with the service, with backoff when it died).
        """
        folder = Path(self.state_dir)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            entry = read_record(path)
            if entry is None or entry.get("name") != path.stem:
                continue
            self.current[path.stem] = entry
            if entry.get("state") == "starting":
                # Being started when the previous service process ended, and nobody waits for it to be
                # ready: stop it, and the watcher starts it afresh.
                await asyncio.to_thread(stop_group, _identity(entry), MARKER, 5.0)
                entry["state"] = "stopped"
            pending = _identity(entry.get("pending"))
            if pending is not None:
                # An update the previous service process did not finish: the store still names the
                # version the current server has, so the half-started new one goes.
                await asyncio.to_thread(stop_group, pending, MARKER, 5.0)
                entry["pending"] = None
            for retiring in map(_identity, entry.pop("retiring", ())):
                # Switched from just before the previous service process ended: its grace is long over.
                await asyncio.to_thread(stop_group, retiring, MARKER, 5.0)
            self._save(path.stem, entry)
        self._ensure_watching()

    async def reconcile(self, names: Collection[str]) -> None:
        """Stop (and forget) the model servers of services that no longer exist."""
        for name in list(self.current):
            if name not in names:
                self.log.warning("Stopping the model server of deleted service %s", name)
                await self.delete(name)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        for task in list(self._relaunching.values()):
            task.cancel()
        for timer in self._retirements:
            timer.cancel()
        self._retirements.clear()
        stops = []
        for name, entry in list(self.current.items()):
            # Servers switched from are stopped now, whatever happens to the serving one.
            stops += [asyncio.to_thread(stop_group, identity, MARKER, 5.0)
                      for identity in map(_identity, entry.get("retiring", ()))]
            entry = {**entry, "retiring": []}
            if not self.stop_with_service:
                self._save(name, entry)
                continue
            stops += [asyncio.to_thread(stop_group, identity, MARKER, 5.0) for identity in _servers(entry)]
            self._save(name, {**entry, "pending": None, "state": "stopped", "reason": "Stopped with the hub service."})
        await asyncio.gather(*stops)
        self._reap()

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

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    async def _launch(self, launch: dict, entry: dict, *, pending: bool) -> dict:
        """Start a model server for ``launch`` and wait until it is ready; what to record of it.

        It is recorded (in ``entry``: as ``pending`` beside the server still
        answering, or as the service's only one) before the wait, so a hub
        service killed meanwhile leaves no unknown process behind.
        """
        name = launch["name"]
        port = free_port()
        log_path = Path(self.state_dir) / "logs" / f"{name}-v{launch['version']}-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            # A model folder may bring its own predictor.py: user code, without the service's token.
            proc = subprocess.Popen(launch_command(launch, port), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=user_code_env(allowlist=self.env_allowlist))
        self._children[proc.pid] = proc
        identity = identify(proc.pid) or ProcessIdentity(proc.pid, -1, proc.pid)
        url = f"http://127.0.0.1:{port}"
        started = {**identity.to_json(), "port": port, "url": url, "version": launch["version"],
                   "log": str(log_path), "model_dir": launch["model_path"], "since": time.time()}
        if pending:
            self._save(name, {**entry, "pending": started})
        else:
            self._save(name, {**entry, **started, "launch": launch, "pending": None, "state": "starting"})
        try:
            await self._wait_ready(name, proc, url, log_path)
        except BaseException:
            # Not ready in time, or the wait was cancelled: nothing half-started stays behind.
            await asyncio.shield(self._terminate(identity, proc))
            raise
        return started

    async def _wait_ready(self, name: str, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout
        client = AsyncHTTPClient()
        while True:
            if proc.poll() is not None:
                raise Unavailable(f"The model server for {name!r} exited ({proc.returncode}):\n{tail(log_path)}")
            try:
                response = await client.fetch(url + "/v2/health/ready", raise_error=False, request_timeout=2)
                if response.code == 200:
                    return
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise Unavailable(f"The model server for {name!r} was not ready in {self.ready_timeout:.0f} s:\n"
                                  f"{tail(log_path)}")
            await asyncio.sleep(0.1)

    async def _terminate(self, identity: ProcessIdentity | None, proc: subprocess.Popen | None = None) -> None:
        """Stop a server of ours (SIGTERM: it drains in-flight requests; SIGKILL after a grace) and reap it."""
        proc = proc or (self._children.get(identity.pid) if identity else None)
        await asyncio.to_thread(stop_group, identity, MARKER, 10.0)
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()  # our own unreaped child: its pid cannot have been reused
                await asyncio.to_thread(proc.wait)
            self._children.pop(proc.pid, None)

    async def _switch(self, name: str, launch: dict) -> dict:
        """Start ``launch`` beside the current server, route to it once ready, then stop the old one."""
        old = self.current.get(name)
        if old is None or old.get("pid") is None:  # none recorded (lost, or never started): a fresh start
            started = await self._launch(launch, {"name": name, "restarts": 0, "reason": "", **(old or {})},
                                         pending=False)
            self._save(name, {**self.current[name], **started, "state": "ready", "reason": ""})
            return started
        try:
            started = await self._launch(launch, old, pending=True)
        except BaseException:
            entry = self.current.get(name)
            if entry is not None:
                self._save(name, {**entry, "pending": None})
            raise
        entry = self.current.get(name) or old
        previous = _identity(old)
        retiring = list(entry.get("retiring", ()))
        if previous is not None and previous != _identity(started):
            # Recorded until stopped, so neither a delete in the grace nor the service's end leaves it running.
            retiring.append(previous.to_json())
            timer = asyncio.get_running_loop().call_later(
                SWITCH_GRACE, lambda: asyncio.ensure_future(self._retire(name, previous, timer)))
            self._retirements.add(timer)
        self._save(name, {**entry, **started, "launch": launch, "pending": None, "state": "ready", "reason": "",
                          "restarts": 0, "retiring": retiring})
        return started

    async def _retire(self, name: str, identity: ProcessIdentity, timer: asyncio.TimerHandle) -> None:
        """Stop a server switched from, once its grace is over, and drop it from the record."""
        self._retirements.discard(timer)
        await self._terminate(identity)
        entry = self.current.get(name)
        if entry is not None:
            kept = [r for r in entry.get("retiring", ()) if _identity(r) != identity]
            self._save(name, {**entry, "retiring": kept})

    # --- watching --------------------------------------------------------------------------------

    def _ensure_watching(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_forever())

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await self.check()
            except Exception:
                self.log.exception("Checking the model servers failed")

    async def check(self) -> None:
        """One round of the watcher: reap, and start again each server that is gone (with backoff)."""
        self._reap()
        now = time.time()
        for name in list(self.current):
            if name in self._relaunching:
                continue
            entry = self._reload(name)
            if entry is None or entry.get("state") in ("failed", "starting"):
                continue
            if entry.get("pid") is not None and alive(_identity(entry)):
                if entry.get("restarts") and now - entry.get("since", now) > self.stable_seconds:
                    self._save(name, {**entry, "restarts": 0})
                continue
            if "launch" not in entry:
                continue
            restarts = int(entry.get("restarts", 0))
            if entry.get("state") == "stopped":
                delay, restarts = 0.0, 0  # stopped with the service, not crashed
            elif restarts >= self.max_restarts:
                last = tail(Path(entry.get("log", "")))
                self.log.warning("Model server of %s died %d time(s) in a row; giving up", name, restarts + 1)
                self._save(name, {**entry, "state": "failed", "reason": (
                    f"The model server stopped and was restarted {restarts} time(s) without staying up; restart "
                    f"the service once its cause is fixed. Last lines:\n{last}")})
                continue
            else:
                delay = min(self.restart_backoff * 2 ** restarts, self.max_restart_delay)
                self.log.warning("Model server of %s is gone; starting it again in %.1f s", name, delay)
            self._save(name, {**entry, "state": "restarting", "restarts": restarts + (entry.get("state") != "stopped"),
                              "reason": f"The model server stopped; starting it again (attempt {restarts + 1})."})
            self._relaunching[name] = asyncio.get_running_loop().create_task(self._relaunch(name, delay))

    async def _relaunch(self, name: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            entry = self._reload(name)
            if entry is None or entry.get("state") != "restarting":
                return  # deleted, restarted or updated meanwhile
            try:
                started = await self._launch(entry["launch"], entry, pending=False)
            except Exception as e:  # it did not come up (Unavailable), or could not even start (OSError)
                entry = self.current.get(name)
                if entry is not None:
                    self._save(name, {**entry, "state": "down", "reason": str(e)[:64 * 1024]})
                return
            entry = self.current.get(name)
            if entry is not None:
                self._save(name, {**entry, **started, "state": "ready", "reason": ""})
        finally:
            self._relaunching.pop(name, None)

    # --- the interface ---------------------------------------------------------------------------

    def _cancel_relaunch(self, name: str) -> None:
        """Stop the watcher's restart of ``name`` (its half-started server is stopped): the caller acts now."""
        task = self._relaunching.pop(name, None)
        if task is not None:
            task.cancel()

    async def deploy(self, spec: DeploymentSpec) -> dict:
        self._check(spec)
        self._ensure_watching()
        if spec.name in self.current or self._reload(spec.name) is not None:
            # A record left by a service of the same name that is gone from the store: its server goes first.
            await self.delete(spec.name)
        launch = launch_args(spec)
        try:
            started = await self._launch(launch, {"name": spec.name, "restarts": 0, "reason": ""}, pending=False)
        except BaseException:
            self._save(spec.name, None)  # the process is stopped already; nothing is left to find
            raise
        self._save(spec.name, {**self.current[spec.name], **started, "state": "ready"})
        return {key: started[key] for key in DETAILS}

    async def update(self, spec: DeploymentSpec) -> dict:
        self._check(spec)
        self._ensure_watching()
        self._cancel_relaunch(spec.name)
        started = await self._switch(spec.name, launch_args(spec))  # the old one serves until the new one is ready
        return {key: started[key] for key in DETAILS}

    async def restart(self, name: str) -> dict:
        """Start the service's model server anew (the same version), after it failed or to reload it."""
        entry = self.current.get(name) or self._reload(name)
        if entry is None or "launch" not in entry:
            raise Conflict(f"Service {name!r} has no model server recorded on this machine: update it to start one.")
        self._cancel_relaunch(name)
        self._ensure_watching()
        if entry.get("pid") is not None and is_ours(_identity(entry), MARKER):
            started = await self._switch(name, entry["launch"])
        else:
            self._save(name, {**entry, "state": "starting", "restarts": 0})
            try:
                started = await self._launch(entry["launch"], self.current[name], pending=False)
            except BaseException:
                entry = self.current.get(name)
                if entry is not None:
                    self._save(name, {**entry, "state": "failed", "reason": "The restart failed; see the log."})
                raise
            self._save(name, {**self.current[name], **started, "state": "ready", "reason": ""})
        return {key: started[key] for key in DETAILS}

    async def delete(self, name: str) -> bool:
        entry = self.current.get(name) or self._reload(name)
        self._save(name, None)
        self._cancel_relaunch(name)
        if entry is None:
            return False
        await asyncio.gather(*(self._terminate(identity) for identity in _servers(entry)))
        return True

    async def status(self, name: str) -> ServiceStatus:
        entry = self.current.get(name)
        if entry is None:
            return ServiceStatus("Failed", reason="No model server is running for this service; update it to start one.")
        version = entry.get("version")
        if entry.get("state") == "failed":
            return ServiceStatus("Failed", version=version, reason=entry.get("reason", ""))
        if entry.get("pid") is not None and alive(_identity(entry)) and entry.get("state") != "starting":
            return ServiceStatus("Ready", version=version, ready_replicas=1, url=entry["url"])
        if "launch" in entry and self.max_restarts > 0:
            # Dead or not ready yet: the watcher (or a deploy, update or restart) is bringing it up.
            reason = entry.get("reason") if entry.get("state") != "ready" else ""
            last = tail(Path(entry["log"])) if entry.get("log") else ""
            return ServiceStatus("Pending", version=version, reason=(
                f"{reason or 'The model server stopped or is starting; it is being started.'}"
                + (f" Last lines:\n{last}" if last else "")))
        return ServiceStatus("Failed", version=version,
                             reason=f"The model server stopped. Last lines:\n{tail(Path(entry.get('log', '')))}")
