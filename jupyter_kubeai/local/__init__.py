"""Local mode: the same hub on one machine, with no cluster.

- :mod:`.share`: the local share, a folder laid out like the cluster share;
- :mod:`.spawner`: ``LocalKubeAISpawner``, JupyterLab as a local process;
- :mod:`.auth`: ``DemoAuthenticator``, the demo users' login.
"""
