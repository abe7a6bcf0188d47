"""The hub service "kubeai": the control plane of jupyter_kubeai.

A JupyterHub service in its own process, with a
REST API under ``/services/kubeai/api/``. Only this process holds cluster
credentials; every request is checked against the caller's hub identity.

- :mod:`.app`: the ``KubeAIService`` application (settings, routes, main);
- :mod:`.identity`: who is asking (hub token or OAuth cookie, groups, admin);
- :mod:`.handlers`: thin request handlers;
- ``openapi.yaml``: the REST API's OpenAPI document.
"""
