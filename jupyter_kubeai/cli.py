"""``kubeai``: training jobs from a shell or a scheduler, through the hub service's REST API.

Commands (``kubeai <command> --help`` for each):

- ``submit notebook.ipynb [--framework pytorch --workers 2 ...] [--follow]``:
  write the notebook's snapshot into ``<home>/.kubeai/jobs/<job-id>/`` (as
  the lab's "Submit as job" does), submit it, print the job id; a refused
  submission's folder is removed again;
- ``jobs [--state S] [--project P] [--json]``: the jobs you can see;
- ``status <id> [--json]``: one job, its state fresh from the backend;
- ``logs <id> [--replica R] [-f]``: a replica's log, streamed with ``-f``;
- ``cancel <id>``, ``resubmit <id>``, ``delete <id>``;
- ``doctor [--json]``: check the cluster (hub admins); ``doctor --kubeconfig
  PATH`` checks it straight, without the hub (see :mod:`.cli_doctor`).

The service is ``--url`` or ``$KUBEAI_SERVICE_URL`` (set in every lab
started by the hub), the credential ``--token`` or ``$JUPYTERHUB_API_TOKEN``
(a lab's own token, or one made on the hub's token page). The home is
``$KUBEAI_HOME``, else ``$HOME``: the folder the service sees as the
user's home (the lab's working directory).

Exit status: 0 done, 1 refused or failed (the service's message on
stderr; with ``--follow``, also a job that did not succeed), 2 usage.
Only the standard library is used, so it runs in any image.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import nbformat.reader

from . import cli_doctor, cli_models
from .errors import KubeAIError
from .jobs.spec import FRAMEWORKS
from .jobs.status import STATES
from .jobs.submission import finish_submission, prepare_submission

ENV_URL = "KUBEAI_SERVICE_URL"
ENV_TOKEN = "JUPYTERHUB_API_TOKEN"
ENV_HOME = "KUBEAI_HOME"
TIMEOUT = 60  # seconds for one request; following a log has none
FOLLOW_POLL = 1.0  # seconds between looks while a job has no log to follow yet


class CLIError(Exception):
    """Shown as ``kubeai: <message>`` on stderr; exit status 1."""


class ServiceError(CLIError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --- talking to the service ------------------------------------------------------------------


class Client:
    """The hub service's REST API (``<url>api/...``) with a hub token, stdlib only."""

    def __init__(self, url: str, token: str):
        self.url = url if url.endswith("/") else url + "/"
        self.token = token

    def open(self, method: str, path: str, body: object = None, *, timeout: float | None = TIMEOUT):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"token {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise ServiceError(e.code, _error_message(e)) from None
        except urllib.error.URLError as e:
            raise CLIError(f"Cannot reach the kubeai service at {self.url}: {_reason(e.reason)}. "
                           f"Check --url or ${ENV_URL}.") from None
        except (TimeoutError, socket.timeout):
            raise CLIError(f"The kubeai service at {self.url} did not answer within {timeout:.0f} s.") from None
        except (ConnectionError, OSError) as e:
            raise CLIError(f"Cannot reach the kubeai service at {self.url}: {_reason(e)}.") from None

    def call(self, method: str, path: str, body: object = None):
        """The decoded JSON answer (None for an empty one), or ServiceError with the service's message."""
        with self.open(method, path, body) as response:
            raw = _read(response, self.url)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CLIError(f"{self.url}{path} did not answer JSON; is {self.url} the kubeai service?") from None

    def stream(self, path: str) -> Iterator[bytes]:
        """A text response as it arrives (the service flushes log lines as they are written)."""
        with self.open("GET", path, timeout=None) as response:
            while True:
                try:
                    chunk = response.read1(64 * 1024)
                except (OSError, ValueError) as e:  # the connection dropped mid-stream
                    raise CLIError(f"The log stream from {self.url} broke off: {_reason(e)}.") from None
                if not chunk:
                    return
                yield chunk


def _read(response, url: str) -> bytes:
    try:
        return response.read()
    except (OSError, ValueError) as e:
        raise CLIError(f"The answer from {url} broke off: {_reason(e)}.") from None


def _reason(error: object) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the hub running?)"
    if isinstance(error, socket.gaierror):
        return f"unknown host ({error.strerror})"
    return str(getattr(error, "strerror", None) or error) or type(error).__name__


def _error_message(error: urllib.error.HTTPError) -> str:
    """The service's ``{"message"}``, else the HTTP status (a proxy's page, say)."""
    try:
        body = json.loads(error.read() or b"null")
    except (ValueError, OSError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return f"HTTP {error.code} {error.reason} from {error.url}"


def job_path(job_id: str, suffix: str = "") -> str:
    return f"api/jobs/{urllib.parse.quote(job_id, safe='')}{suffix}"


# --- commands --------------------------------------------------------------------------------


def home_dir() -> Path:
    home = os.environ.get(ENV_HOME) or os.environ.get("HOME")
    if not home:
        raise CLIError(f"Neither ${ENV_HOME} nor $HOME is set: the job folder goes under your home.")
    return Path(home).absolute()


def parse_pairs(pairs: list[str], what: str, *, values_as_json: bool) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{what} {pair!r} is not KEY=VALUE.")
        if values_as_json:
            try:
                value = json.loads(value)
            except ValueError:
                pass  # plain text
        out[key] = value
    return out


def read_notebook(path: Path) -> dict:
    if path.suffix != ".ipynb":
        raise CLIError(f"{path} is not a notebook (.ipynb).")
    try:
        text = path.read_text(encoding="utf-8")
        content = json.loads(text)
    except FileNotFoundError:
        raise CLIError(f"There is no notebook {path}.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"Cannot read {path}: {_reason(e)}.") from None
    except ValueError as e:
        raise CLIError(f"{path} is not valid JSON, so not a notebook: {e}") from None
    if not isinstance(content, dict):
        raise CLIError(f"{path} is not a notebook.")
    try:
        # As Jupyter reads it: sources saved as lists of lines joined, older formats converted.
        # (The snapshot then checks it against the notebook schema.)
        return json.loads(json.dumps(nbformat.convert(nbformat.reader.reads(text), 4)))
    except Exception as e:  # nbformat gives TypeError, KeyError... for a malformed file
        raise CLIError(f"{path} is not a valid notebook: {e}") from None


def notebook_field(path: Path, home: Path) -> str:
    """The notebook as the job records it: relative to the home when inside it."""
    path = path.absolute()
    try:
        return str(path.relative_to(home))
    except ValueError:
        return str(path)


def submission_fields(args) -> dict:
    fields = {"framework": args.framework}
    optional = {
        "name": args.name, "workers": args.workers, "parameter_servers": args.ps,
        "procs_per_worker": args.procs_per_worker, "profile": args.profile, "gpus": args.gpus,
        "image": args.image, "custom_image": args.custom_image, "project": args.project,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    fields["parameters"] = parse_pairs(args.parameter, "Parameter", values_as_json=True)
    fields["env"] = parse_pairs(args.env, "Environment variable", values_as_json=False)
    return fields


def cmd_submit(client: Client, args, out) -> int:
    home = home_dir()
    path = Path(args.notebook)
    content = read_notebook(path)
    job_id, body = prepare_submission(home, notebook_field(path, home), content, submission_fields(args))
    status, answer = 0, None
    try:
        answer = client.call("POST", "api/jobs", body)
        status = 201
    finally:
        # Refused, unreachable or interrupted: the snapshot folder goes again.
        finish_submission(home, job_id, status, answer)
    print(answer["job_id"], file=out, flush=True)
    if not args.follow:
        return 0
    follow_logs(client, job_id, args.replica, out)
    return job_outcome(client, job_id)


def cmd_jobs(client: Client, args, out) -> int:
    query = {k: v for k, v in (("state", args.state), ("project", args.project), ("limit", args.limit)) if v}
    jobs = client.call("GET", "api/jobs" + (f"?{urllib.parse.urlencode(query)}" if query else ""))["jobs"]
    if args.json:
        json.dump(jobs, out, indent=2)
        out.write("\n")
        return 0
    rows = [("ID", "STATE", "FRAMEWORK", "WORKERS", "OWNER", "PROJECT", "AGE")]
    now = time.time()
    for job in jobs:
        rows.append((job["job_id"], job["state"], job["framework"], topology(job), job["owner"],
                     job["project"] or "-", age(now - job["created"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")
    return 0


def topology(job: dict) -> str:
    """Workers, and processes per worker when more than one: ``2x4`` is 2 workers of 4 processes (8 ranks)."""
    workers, procs = job.get("workers") or 1, job.get("procs_per_worker") or 1
    return f"{workers}x{procs}" if procs > 1 else str(workers)


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def pick_replica(client: Client, job_id: str, wait: bool) -> str | None:
    """``main`` where the backend has it (local), else the first replica (rank 0, the master pod).

    With ``wait``, while the job is pending and has no replica yet (pods
    not created), look again; None once it ended with none.
    """
    while True:
        replicas = client.call("GET", job_path(job_id, "/logs"))["replicas"]
        if replicas:
            return "main" if "main" in replicas else replicas[0]
        if not wait or not client.call("GET", job_path(job_id))["active"]:
            return None
        time.sleep(FOLLOW_POLL)


def follow_logs(client: Client, job_id: str, replica: str | None, out) -> None:
    replica = replica or pick_replica(client, job_id, wait=True)
    if replica is None:
        return
    for chunk in client.stream(job_path(job_id, f"/logs/{urllib.parse.quote(replica, safe='')}?follow=1")):
        write_bytes(out, chunk)


def write_bytes(out, chunk: bytes) -> None:
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(chunk)
        buffer.flush()
    else:
        out.write(chunk.decode("utf-8", "replace"))
        out.flush()


def job_outcome(client: Client, job_id: str) -> int:
    """After following: 0 if the job succeeded, else 1 with its state and reason on stderr."""
    job = client.call("GET", job_path(job_id))
    if job["state"] == "Succeeded":
        return 0
    reason = f": {job['reason']}" if job.get("reason") else ""
    print(f"kubeai: job {job_id} {job['state']}{reason}", file=sys.stderr)
    return 1


def cmd_logs(client: Client, args, out) -> int:
    if args.follow:
        follow_logs(client, args.job_id, args.replica, out)
        return 0
    replica = args.replica or pick_replica(client, args.job_id, wait=False)
    if replica is None:
        return 0
    with client.open("GET", job_path(args.job_id, f"/logs/{urllib.parse.quote(replica, safe='')}")) as response:
        write_bytes(out, _read(response, client.url))
    return 0


STATUS_FIELDS = ("job_id", "name", "state", "owner", "project", "framework", "workers", "parameter_servers",
                 "procs_per_worker", "profile", "gpus", "image", "notebook", "folder", "created", "started", "finished")


def cmd_status(client: Client, args, out) -> int:
    job = client.call("GET", job_path(args.job_id))
    if args.json:
        json.dump(job, out, indent=2)
        out.write("\n")
        return 0
    for name in STATUS_FIELDS:
        value = job.get(name)
        if name in ("created", "started", "finished") and value:
            value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        if value not in (None, ""):
            out.write(f"{name + ':':<18} {value}\n")
    if job.get("reason"):
        out.write(f"reason:\n{job['reason']}\n")
    return 0


def cmd_cancel(client: Client, args, out) -> int:
    job = client.call("POST", job_path(args.job_id, "/cancel"), {})
    print(f"{job['job_id']} {job['state']}", file=out)
    return 0


def cmd_resubmit(client: Client, args, out) -> int:
    job = client.call("POST", job_path(args.job_id, "/resubmit"), {})
    print(job["job_id"], file=out)
    return 0


def cmd_delete(client: Client, args, out) -> int:
    client.call("DELETE", job_path(args.job_id))
    print(f"{args.job_id} deleted", file=out)
    return 0


# --- the command line ------------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # On the main parser and every subcommand (so ``kubeai jobs --url ...`` works too);
    # the subcommands' copies only set a value when given, never a default over the main one.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--url", default=default,
                        help=f"The kubeai service, e.g. https://hub.example.org/services/kubeai/ (default: ${ENV_URL}).")
    parser.add_argument("--token", default=default, help=f"A hub API token (default: ${ENV_TOKEN}).")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubeai",
        description="Training jobs, registered models and inference services, through the kubeai hub service.",
    )
    _connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def leaf(subparsers, name: str, func, help: str) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(name, help=help, description=help)
        _connection_options(sub, suppress=True)
        sub.set_defaults(func=func)
        return sub

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        return leaf(commands, name, func, help)

    def group(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _connection_options(sub, suppress=True)
        return sub

    submit = command("submit", cmd_submit, "Submit a notebook as a training job; prints its id.")
    submit.add_argument("notebook", help="The notebook (.ipynb); it is snapshotted as it is now.")
    submit.add_argument("--framework", choices=list(FRAMEWORKS), default="single",
                        help="pytorch (DDP), tensorflow (parameter server), mpi (Horovod), single (default).")
    submit.add_argument("--name", help="Display name (default: the notebook's name).")
    submit.add_argument("--workers", type=int, help="Workers (pods; local: ranks = workers x procs).")
    submit.add_argument("--procs-per-worker", type=int, dest="procs_per_worker", help="Processes per worker.")
    submit.add_argument("--ps", type=int, help="Parameter servers (TensorFlow).")
    submit.add_argument("--profile", "--size", dest="profile", help="A size from the catalog (default: yours).")
    submit.add_argument("--gpus", type=int, help="GPUs per worker (default: the size's).")
    submit.add_argument("--image", help="A catalog image (default: the default image).")
    submit.add_argument("--custom-image", dest="custom_image", help="An image reference an image rule allows you.")
    submit.add_argument("--project", help="One of your projects (its volume, queue and GPU quota); default: personal.")
    submit.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="A notebook parameter (papermill-style); VALUE is read as JSON, else as text. Repeatable.")
    submit.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                        help="An environment variable for the job. Repeatable.")
    submit.add_argument("-f", "--follow", action="store_true",
                        help="Stream the log until the job ends; exit 1 unless it succeeded.")
    submit.add_argument("--replica", help="With --follow: which replica's log (default: main, or the first).")

    jobs = command("jobs", cmd_jobs, "List your jobs and your projects' jobs, newest first.")
    jobs.add_argument("--state", choices=list(STATES))
    jobs.add_argument("--project")
    jobs.add_argument("--limit", type=int, help="At most this many (the service's default: 100).")
    jobs.add_argument("--json", action="store_true", help="The service's JSON instead of a table.")

    status = command("status", cmd_status, "Show one job: its state (and why), topology, size, folder.")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="The service's JSON.")

    logs = command("logs", cmd_logs, "Print a job's log (one replica).")
    logs.add_argument("job_id")
    logs.add_argument("--replica", "-r", help="main, rank-0, ... locally; master-0, worker-1, ... on a cluster.")
    logs.add_argument("-f", "--follow", action="store_true", help="Stream it until the job ends.")

    for name, func, help in (
        ("cancel", cmd_cancel, "Stop a running or pending job."),
        ("resubmit", cmd_resubmit, "Run a job's snapshot again as a new job; prints its id."),
        ("delete", cmd_delete, "Delete an ended job's record (its folder stays)."),
    ):
        command(name, func, help).add_argument("job_id")
    cli_models.add_commands(leaf, group)
    cli_doctor.add_command(command)
    return parser


def main(argv: list[str] | None = None, out=None) -> int:
    """Run one command; returns the exit status (the console script exits with it)."""
    out = out or sys.stdout
    parser = make_parser()
    args = parser.parse_args(argv)
    url = args.url or os.environ.get(ENV_URL)
    token = args.token or os.environ.get(ENV_TOKEN)
    direct = cli_doctor.runs_without_service(args)  # kubeai doctor --kubeconfig: no service involved
    if not url and not direct:
        parser.error(f"no service URL: pass --url or set ${ENV_URL} (it ends with /services/kubeai/).")
    if not token and not direct:
        parser.error(f"no hub token: pass --token or set ${ENV_TOKEN} (make one on the hub's token page).")
    if url and urllib.parse.urlparse(url).scheme not in ("http", "https"):
        parser.error(f"--url must be an http(s) URL, not {url!r}.")
    try:
        return args.func(None if direct else Client(url, token), args, out)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    except (CLIError, KubeAIError) as e:
        print(f"kubeai: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. ``kubeai logs x | head``
        return 0


if __name__ == "__main__":
    sys.exit(main())
