import pytest
from tornado.httpserver import HTTPServer

from processes import free_port

# Fixtures as plugins: a real, throwaway PostgreSQL server for the store tests
# (tests/postgres.py) and an HTTP-level fake Kubernetes API (tests/kubefake.py).
pytest_plugins = ["postgres", "kubefake", "serviceapp"]


@pytest.fixture
async def serve():
    """Serve tornado applications on free loopback ports, stopped after the test."""
    servers = []

    def start(app) -> str:
        port = free_port()
        server = HTTPServer(app)
        server.listen(port, "127.0.0.1")
        servers.append(server)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop()



@pytest.fixture(autouse=True)
def _own_kubeai_state_dir(monkeypatch, tmp_path_factory):
    """Each test's own ``$KUBEAI_STATE_DIR`` (a test may set another): local backends record the
    processes they start there (and count their reservations), so tests, and concurrent runs, never
    see each other's; and a value ``hubconfig.configure`` wrote is undone after the test."""
    monkeypatch.setenv("KUBEAI_STATE_DIR", str(tmp_path_factory.mktemp("kubeai-state")))


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    """The real hub in local mode, shared by a module's tests; at the end, nothing it started may be left running."""
    from processes import LocalHub

    hub = LocalHub(tmp_path_factory.mktemp("hub")).start()
    yield hub
    left = hub.stop()
    assert left == [], f"processes left running after the hub stopped: {left}"
