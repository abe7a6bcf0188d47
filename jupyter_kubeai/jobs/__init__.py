"""Training jobs: one checked spec (:mod:`.spec`), turned into Kubernetes
objects by the pure builders in :mod:`jupyter_kubeai.kube.training`.

Submission, the backends (local process groups, Kubernetes), the REST API,
the Jobs panel and the CLI build on these.
"""
