"""Where jobs run: one interface (:mod:`.base`), a local and (to come) a Kubernetes implementation."""
