"""The single-user Jupyter Server extension of jupyter_kubeai.

It serves ``/kubeai/api/...`` to the lab extension and forwards every call
to the hub service with the user's own hub token; see :mod:`.extension`.
"""
