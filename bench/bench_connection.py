"""Latency of the lab panel's connection check, against plain calls.

Starts the real hub in local mode (as the end-to-end tests do), logs in as
alice, then times N sequential requests of each kind over one keep-alive
session:

- ``chain``: ``GET /user/alice/kubeai/api/me``: proxy → alice's Jupyter
  server → server extension → kubeai service (token check, cached) → answer;
- ``lab``: ``GET /user/alice/api/status``: proxy → Jupyter server (baseline 1);
- ``hub``: ``GET /hub/api/user`` with alice's token: the hub's own whoami
  through the proxy (baseline 2).

Prints p50/p90/p99 in ms and the ratio of the chain's p50 to each baseline.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from processes import LocalHub  # noqa: E402

N = 300


def timed(session: requests.Session, url: str, n: int = N, **kwargs) -> list[float]:
    for _ in range(20):  # warm up: connections, caches
        session.get(url, **kwargs).raise_for_status()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = session.get(url, **kwargs)
        times.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
    return times


def summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=100)
    return {"p50": statistics.median(times), "p90": q[89], "p99": q[98]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hub = LocalHub(Path(tmp)).start()
        try:
            session = hub.login("alice")
            session.get(f"{hub.url}/hub/spawn/alice")
            lab = f"{hub.url}/user/alice/lab"
            deadline = time.monotonic() + 90
            while session.get(lab).url.split("?")[0] != lab:
                if time.monotonic() > deadline:
                    raise TimeoutError("alice's server did not start")
                time.sleep(0.5)
            token = hub.token("alice")
            results = {
                "chain": summary(timed(session, f"{hub.url}/user/alice/kubeai/api/me")),
                "lab": summary(timed(session, f"{hub.url}/user/alice/api/status")),
                "hub": summary(timed(requests.Session(), f"{hub.url}/hub/api/user",
                                     headers={"Authorization": f"token {token}"})),
            }
        finally:
            hub.stop()
    print(f"{N} sequential requests each, one keep-alive connection, local mode")
    print(f"{'call':8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for name, s in results.items():
        print(f"{name:8} {s['p50']:8.2f} {s['p90']:8.2f} {s['p99']:8.2f}")
    chain = results["chain"]["p50"]
    print(f"ratio chain/lab p50: {chain / results['lab']['p50']:.2f}")
    print(f"ratio chain/hub p50: {chain / results['hub']['p50']:.2f}")


if __name__ == "__main__":
    main()
