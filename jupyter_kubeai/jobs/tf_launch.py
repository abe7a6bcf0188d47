"""``python -m jupyter_kubeai.jobs.tf_launch``: a TensorFlow parameter-server job on this machine.

What the TFJob operator does on a cluster, with local processes: one
chief, ``workers - 1`` workers and ``ps`` parameter servers, each with
its ``TF_CONFIG`` (the cluster on free loopback ports, and its own task),
each logging to ``logs/ranks/<role>/<index>/{stdout,stderr}.log``. The job
ends when the chief and the workers have: parameter servers serve
forever in TensorFlow, so they are stopped then. The exit code is the
first failing task's, chief first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .local_commands import free_port
from .supervise import RANK_LOGS

ROLES = ("chief", "worker", "ps")


def cluster_spec(workers: int, ps: int) -> dict[str, list[str]]:
    """The ``TF_CONFIG`` cluster: the chief is task 0 of the training, then the workers."""
    spec = {"chief": [f"127.0.0.1:{free_port()}"], "ps": [f"127.0.0.1:{free_port()}" for _ in range(ps)]}
    if workers > 1:
        spec["worker"] = [f"127.0.0.1:{free_port()}" for _ in range(workers - 1)]
    return spec


def task_env(cluster: dict, role: str, index: int) -> dict[str, str]:
    # RANK: 0 for the chief only, so metrics and the executed copy come from it.
    rank = 0 if role == "chief" else 1 + index + (len(cluster.get("worker", [])) if role == "ps" else 0)
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": role, "index": index}}), "RANK": str(rank)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--ps", type=int, default=1)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    cluster = cluster_spec(args.workers, args.ps)
    procs: dict[tuple[str, int], subprocess.Popen] = {}
    for role in ROLES:
        for index in range(len(cluster.get(role, []))):
            logs = Path(RANK_LOGS) / role / str(index)
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / "stdout.log", "ab") as out, open(logs / "stderr.log", "ab") as err:
                procs[role, index] = subprocess.Popen(command, env={**os.environ, **task_env(cluster, role, index)},
                                                      stdout=out, stderr=err)
    print(f"TensorFlow cluster on this machine: {json.dumps(cluster)}", flush=True)

    def stop(signum, frame):
        for proc in procs.values():
            proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    codes = {key: proc.wait() for key, proc in procs.items() if key[0] != "ps"}
    for key, proc in procs.items():
        if key[0] == "ps":
            proc.terminate()
            proc.wait()
    for (role, index), code in codes.items():
        print(f"{role} {index} exited with code {code}", flush=True)
    return next((code for code in codes.values() if code), 0)


if __name__ == "__main__":
    sys.exit(main())
