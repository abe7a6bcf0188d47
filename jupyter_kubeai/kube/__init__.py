"""Kubernetes side: pure builders of manifests (:mod:`.objects`).

Builders take data and return dicts; the spawner and the backends do the I/O.
"""
