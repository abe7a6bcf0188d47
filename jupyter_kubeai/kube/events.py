"""Kubernetes events, said in words a notebook user understands."""

from __future__ import annotations

import re

_IMAGE = re.compile(r'[Ii]mage "([^"]+)"')


def readable_event(event: dict, subject: str = "Server") -> str:
    """One line for a core/v1 Event: what happens to the user's pod.

    ``subject`` names the pod in the words of the page showing it: the
    spawn page's "Server" (whose container start means JupyterLab is
    starting), or e.g. a job's replica.
    """
    reason = event.get("reason", "")
    message = event.get("message", "") or ""
    image = _IMAGE.search(message)
    image = image.group(1) if image else "the image"
    node = (event.get("source") or {}).get("host") or ""
    if reason == "Scheduled":
        match = re.search(r"to (\S+)$", message)
        return f"{subject} scheduled on node {match.group(1) if match else node}".rstrip()
    if reason == "FailedScheduling":
        return f"Waiting for a node with room for this size: {message}"
    if reason == "Pulling":
        return f"Pulling image {image}"
    if reason == "Pulled":
        return f"Image {image} ready"
    if reason in ("SuccessfulAttachVolume", "SuccessfulMountVolume"):
        return "Storage attached"
    if reason == "FailedMount":
        return f"Storage could not be mounted yet: {message}"
    if reason == "Created":
        return "Container created"
    if reason == "Started":
        return "JupyterLab starting" if subject == "Server" else f"{subject} started"
    if reason in ("Failed", "BackOff", "ErrImagePull", "ImagePullBackOff"):
        return f"Problem starting {'the server' if subject == 'Server' else subject} ({reason}): {message}"
    return f"{reason}: {message}" if reason else message
