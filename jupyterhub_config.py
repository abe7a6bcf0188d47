# JupyterHub configuration of jupyter_kubeai.
#
# Works as it is: `make run` starts the hub in local mode with it. Set
# KUBEAI_MODE=kubernetes to spawn users' servers as pods instead; see the
# docstring of jupyter_kubeai.hubconfig for every setting it reads.
# Add your own settings below the configure() call: they win.
from pathlib import Path

from jupyter_kubeai.hubconfig import configure

c = get_config()  # noqa: F821 (provided by JupyterHub)
configure(c, project_dir=Path(__file__).parent)
