"""Pure functions: a training object, its pods and their events as a :class:`JobStatus`.

The Kubeflow operators (PyTorchJob, TFJob, MPIJob) report conditions
``Created``, ``Running``, ``Restarting``, ``Succeeded``, ``Failed`` and
``Suspended``; a batch Job and a TrainJob report ``Complete``/``Failed``/
``Suspended`` and leave "running" to the pods. A suspended job with a Kueue
queue label waits for Kueue's admission; a pending job whose pod cannot be
scheduled says why, in the scheduler's words. A failed job names the
replica that failed, its exit code and termination message.
"""

from __future__ import annotations

import datetime

from ..jobs.status import JobEvent, JobStatus
from .events import readable_event
from .training import COMPLETION_INDEX_LABEL, KUEUE_QUEUE_LABEL, LABEL_ROLE, REPLICA_INDEX_LABEL, SINGLE_ROLES

#: Labels the operators put on pods with the replica's index, in order of preference (the
#: replicas' own log files are named the same way: :data:`~.training.RUN_SCRIPT`).
INDEX_LABELS = (REPLICA_INDEX_LABEL, COMPLETION_INDEX_LABEL, "jobset.sigs.k8s.io/job-index")


def timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def replica_name(pod: dict) -> str:
    """``master-0``, ``worker-1``, ``chief-0``, ``ps-0``, ``node-2``, ``launcher``, ``main``."""
    labels = pod.get("metadata", {}).get("labels") or {}
    role = labels.get(LABEL_ROLE) or labels.get("training.kubeflow.org/replica-type", "").lower()
    if not role:
        return pod["metadata"]["name"]
    if role in SINGLE_ROLES:
        return role
    index = next((labels[key] for key in INDEX_LABELS if labels.get(key)), None)
    if index is None:  # no index label: the pod name's last number (operators end names with it)
        tail = pod["metadata"]["name"].rsplit("-", 1)[-1]
        index = tail if tail.isdigit() else pod["metadata"]["name"]
    return f"{role}-{index}"


def _true_conditions(obj: dict) -> dict[str, dict]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in conditions if c.get("status") == "True"}


def _suspended(obj: dict, conditions: dict) -> bool:
    spec = obj.get("spec") or {}
    return bool("Suspended" in conditions or spec.get("suspend") or (spec.get("runPolicy") or {}).get("suspend"))


def unschedulable(pods: list[dict], events: list[dict]) -> str:
    """The scheduler's reason a pod waits ("" if none does)."""
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                if condition.get("reason") == "Unschedulable":
                    return f"Unschedulable: {condition.get('message', '')}".strip()
    failed = [e for e in events if e.get("reason") == "FailedScheduling"]
    if failed:
        return f"Unschedulable: {failed[-1].get('message', '')}".strip()
    return ""


def failed_replica(pods: list[dict]) -> tuple[dict | None, dict]:
    """(the first pod, by replica name, whose container exited non-zero; that container's ``terminated``)."""
    for pod in sorted(pods, key=replica_name):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode"):
                return pod, terminated
    return None, {}


def failure(pods: list[dict]) -> tuple[str, int | None]:
    """(what the failed replica said, its exit code) from the pods' container states."""
    pod, terminated = failed_replica(pods)
    if pod is None:
        return "", None
    code = terminated["exitCode"]
    detail = (terminated.get("message") or terminated.get("reason") or "").strip()
    text = f"{replica_name(pod)} exited with code {code}"
    return (f"{text}: {detail}" if detail else text), code


def job_status(obj: dict, pods: list[dict], events: list[dict]) -> JobStatus:
    """What the job is doing, from its object (conditions), pods and their events."""
    status = obj.get("status") or {}
    conditions = _true_conditions(obj)
    started = timestamp(status.get("startTime"))
    finished = timestamp(status.get("completionTime"))
    if "Failed" in conditions:
        condition = conditions["Failed"]
        detail, code = failure(pods)
        reason = "; ".join(part for part in (condition.get("message", "").strip(), detail) if part)
        return JobStatus("Failed", reason or "The job failed.", exit_code=code, started=started,
                         finished=finished or timestamp(condition.get("lastTransitionTime")))
    for done in ("Succeeded", "Complete"):
        if done in conditions:
            return JobStatus("Succeeded", exit_code=0, started=started,
                             finished=finished or timestamp(conditions[done].get("lastTransitionTime")))
    if _suspended(obj, conditions):
        queued = (obj.get("metadata", {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)
        return JobStatus("Pending", "waiting for Kueue admission" if queued else "suspended")
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if "Running" in conditions or running:
        started = started or min((timestamp(p["status"].get("startTime")) or 0 for p in running), default=None)
        return JobStatus("Running", started=started or None)
    return JobStatus("Pending", unschedulable(pods, events) or ("waiting for its pods to start" if pods else ""))


def job_events(events: list[dict], pods_by_name: dict[str, str]) -> list[JobEvent]:
    """Kubernetes events of the job object and its pods, readable, oldest first.

    ``pods_by_name`` maps pod names to replica names (the events' source).
    """
    out = []
    for event in events:
        involved = event.get("involvedObject") or {}
        source = pods_by_name.get(involved.get("name", ""), "") if involved.get("kind") == "Pod" else ""
        when = (timestamp(event.get("lastTimestamp")) or timestamp(event.get("eventTime"))
                or timestamp(event.get("firstTimestamp")) or timestamp(event.get("metadata", {}).get("creationTimestamp")) or 0.0)
        reason = event.get("reason", "") or "Event"
        message = f"Unschedulable: {event.get('message', '')}" if reason == "FailedScheduling" else \
            readable_event(event, subject=source or "Job")
        out.append(JobEvent(when, event.get("type", "Normal"), reason, message, source))
    out.sort(key=lambda e: e.time)
    return out


def expected_replicas(kind: str, workers: int) -> list[str]:
    """The replicas whose user code must all have exited 0 for a job of ``kind`` to have succeeded."""
    workers = max(int(workers or 1), 1)
    if kind == "PyTorchJob":
        return ["master-0", *(f"worker-{i}" for i in range(workers - 1))]
    if kind == "TFJob":
        return ["chief-0", *(f"worker-{i}" for i in range(workers - 1))]
    if kind == "TrainJob":
        return [f"node-{i}" for i in range(workers)]
    if kind == "MPIJob":
        return ["launcher"]
    return ["main"]


def runs_user_code(kind: str, replica: str) -> bool:
    """Whether ``replica``'s exit says how the job went. Parameter servers never end on their own
    and MPI workers only run sshd (``mpirun`` on the launcher carries every rank's status): both
    are stopped when their pods are deleted, which is no failure of the job."""
    if kind == "MPIJob":
        return replica == "launcher"
    if kind == "TFJob":
        return not replica.startswith("ps-")
    return True


def ended_while_away(kind: str, workers: int, exits: dict[str, int], logs: str) -> tuple[str, str, str]:
    """How a job ended whose objects were deleted while the service was not watching, from the
    exit statuses its replicas left in the job folder (``logs/<replica>.exit``).

    Returns (state, reason, the failed replica or ""). Succeeded only when every expected
    replica left 0 and none left anything else: never a success that did not happen.
    ``logs`` is the folder the reason points to.
    """
    away = "while the kubeai service was down"
    exits = {replica: code for replica, code in exits.items() if runs_user_code(kind, replica)}
    failed = sorted((replica, code) for replica, code in exits.items() if code != 0)
    if failed:
        replica, code = failed[0]
        return ("Failed", f"{replica} exited with code {code} {away} (the job's objects were deleted "
                          f"meanwhile); its logs are in {logs}.", replica)
    missing = [replica for replica in expected_replicas(kind, workers) if replica not in exits]
    if not missing:
        return ("Succeeded", f"It ended {away}; its objects were deleted before the service came back, "
                             f"and every replica's exit status in {logs} is 0.", "")
    return ("Failed", f"The job's objects were deleted {away}, and its folder does not say how it ended "
                      f"(no exit status from {', '.join(missing)}); its logs are in {logs}.", "")
