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

