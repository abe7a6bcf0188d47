"""The command a local job runs, per framework, on this machine.

- PyTorch: ``torchrun`` (``python -m torch.distributed.run``) with
  workers × processes-per-worker ranks on this machine, rendezvous on
  loopback, one log per rank under ``logs/ranks/``; gloo on CPU, NCCL when
  GPUs are there (torch picks per device; the script uses ``LOCAL_RANK``);
- single process: plain Python;
- TensorFlow parameter-server: a chief, workers and parameter servers as
  local processes with their ``TF_CONFIG`` (:mod:`.tf_launch`);
- TensorFlow and MPI run only when TensorFlow or ``mpirun`` is installed
  here; otherwise the submission is refused with a message, never faked.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys

from ..errors import InvalidInput
from .spec import JobSpec
from .supervise import RANK_LOGS as RANK_LOG_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_command(spec: JobSpec, python: str = sys.executable) -> list[str]:
    """The command line for ``spec`` (run in its job folder), or InvalidInput."""
    ranks = spec.workers * spec.procs_per_worker
    if spec.framework == "single":
        return [python, "-u", spec.script]
    if spec.framework == "pytorch":
        if importlib.util.find_spec("torch") is None:
            raise InvalidInput("PyTorch is not installed in this environment: install torch, or pick another framework.")
        return [
            python, "-m", "torch.distributed.run",
            "--nnodes=1", f"--nproc_per_node={ranks}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            f"--log_dir={RANK_LOG_DIR}", "--redirects=3", "--tee=3",
            spec.script,
        ]
    if spec.framework == "tensorflow":
        if importlib.util.find_spec("tensorflow") is None:
            raise InvalidInput(
                "TensorFlow is not installed here, so a TensorFlow parameter-server job cannot run in local mode. "
                "Install tensorflow, or submit it on a cluster."
            )
        return [
            python, "-m", "jupyter_kubeai.jobs.tf_launch",
            f"--workers={spec.workers}", f"--ps={spec.parameter_servers}",
            "--", python, "-u", spec.script,
        ]
    if spec.framework == "mpi":
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            raise InvalidInput("mpirun is not installed here, so a Horovod/MPI job cannot run in local mode. Install Open MPI, or submit it on a cluster.")
        return [mpirun, "--allow-run-as-root", "-np", str(ranks), "--bind-to", "none", python, "-u", spec.script]
    raise InvalidInput(f"Unknown framework {spec.framework!r}.")
