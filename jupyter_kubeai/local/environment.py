"""The environment of the processes local mode starts with users' code (jobs, model servers).

They are started by the hub service, whose own environment holds what users'
code must never see: its hub API token (``JUPYTERHUB_API_TOKEN``, and
``JPY_API_TOKEN``, which JupyterHub sets to the same value), its OAuth
client, its store's URL (``KUBEAI_DB_URL``, perhaps with a password), the
metrics token, and whatever else the machine's operator exported (cloud
keys, ...). On a cluster, jobs and model servers run in pods of their own
and never had it; locally, this keeps it that way.

So the environment is built from an **allow-list** of names that a
training or serving process needs and that carry no credential, never by
removing names known to be secret (a new secret would slip through).
:data:`DEFAULT_ENV_ALLOWLIST` is the default; an entry ending in ``*``
allows every name with that prefix:

- the basics: ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``,
  ``TERM``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``TMPDIR``, ``TMP``,
  ``TEMP``;
- Python: ``PYTHONPATH``, ``PYTHONHOME``, ``PYTHONUNBUFFERED``,
  ``PYTHONIOENCODING``, ``PYTHONUTF8``, ``PYTHONDONTWRITEBYTECODE``,
  ``PYTHONHASHSEED``, ``PYTHONWARNINGS``, ``VIRTUAL_ENV``, ``CONDA_*``;
- native libraries and threads: ``LD_LIBRARY_PATH``, ``OMP_*``, ``MKL_*``,
  ``OPENBLAS_NUM_THREADS``, ``NUMEXPR_*``, ``KMP_*``;
- accelerators and collectives: ``CUDA_*``, ``NVIDIA_*``, ``NCCL_*``,
  ``CUDNN_*``, ``GLOO_*``, ``TORCH_*``, ``TORCHELASTIC_*``, ``TF_CPP_*``,
  ``XLA_FLAGS``, ``HIP_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES``;
- ``mpirun``: ``OMPI_MCA_*``, ``PMIX_MCA_*``, ``HWLOC_*``;
- caches and certificates: ``XDG_CACHE_HOME``, ``HF_HOME``,
  ``SSL_CERT_FILE``, ``SSL_CERT_DIR``, ``REQUESTS_CA_BUNDLE``.

A job's own declared environment (``env`` of the submission, checked by
:mod:`jupyter_kubeai.jobs.spec`) and what the platform sets for it
(``KUBEAI_JOB_ID``, ``CUDA_VISIBLE_DEVICES``, ...) are added on top. The list
is a setting: ``LocalBackend.env_allowlist`` (jobs) and
``LocalServing.env_allowlist`` (model servers).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from traitlets import List, Unicode

DEFAULT_ENV_ALLOWLIST = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "TMP", "TEMP",
    "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED", "PYTHONWARNINGS", "VIRTUAL_ENV", "CONDA_*",
    "LD_LIBRARY_PATH", "OMP_*", "MKL_*", "OPENBLAS_NUM_THREADS", "NUMEXPR_*", "KMP_*",
    "CUDA_*", "NVIDIA_*", "NCCL_*", "CUDNN_*", "GLOO_*", "TORCH_*", "TORCHELASTIC_*", "TF_CPP_*", "XLA_FLAGS",
    "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
    "OMPI_MCA_*", "PMIX_MCA_*", "HWLOC_*",
    "XDG_CACHE_HOME", "HF_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
)


def allowed(name: str, allowlist: Iterable[str] = DEFAULT_ENV_ALLOWLIST) -> bool:
    """Whether ``name`` is on ``allowlist`` (exact, or a prefix entry ending in ``*``)."""
    for entry in allowlist:
        if entry.endswith("*") and name.startswith(entry[:-1]) or name == entry:
            return True
    return False


def user_code_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None,
                  allowlist: Iterable[str] = DEFAULT_ENV_ALLOWLIST) -> dict[str, str]:
    """The names of ``base`` (default: this process's environment) on ``allowlist``, plus ``extra``.

    ``extra`` is what the platform and the job itself set; it is added as
    given (the job spec refuses names the platform reserves).
    """
    base = os.environ if base is None else base
    allowlist = tuple(allowlist)
    env = {name: value for name, value in base.items() if allowed(name, allowlist)}
    env.update(extra or {})
    return env


def env_allowlist_trait(what: str) -> List:
    """The ``env_allowlist`` setting of a local backend starting ``what`` (jobs, model servers)."""
    return List(
        Unicode(),
        default_value=list(DEFAULT_ENV_ALLOWLIST),
        config=True,
        help=f"""Names of the service's environment variables that {what} inherit; ``NAME*`` allows a prefix.

        Everything else in the hub service's environment (its hub API token
        ``JUPYTERHUB_API_TOKEN``/``JPY_API_TOKEN``, the store's URL, cloud
        credentials, ...) stays out of users' code. The default (see
        :mod:`jupyter_kubeai.local.environment`) covers the basics, Python,
        threads, CUDA/NCCL/Gloo/torch and mpirun. Extend it rather than
        replace it, e.g. ``c.LocalBackend.env_allowlist.append("WANDB_MODE")``;
        never add a name holding a credential.
        """,
    )
