"""Local mode: spawn-to-ready of LocalKubeAISpawner against JupyterHub's SimpleLocalProcessSpawner.

Two real hubs, one after the other, on this machine: the project's
``jupyterhub_config.py`` as it is, and the same config with the spawner
swapped for JupyterHub's stock ``SimpleLocalProcessSpawner`` (home folders
in a temp dir). Each server is started through the hub's REST API and timed
until the hub reports it ready; N rounds over three users, each stopped
before the next round. Ours also reads the catalog, checks the choice and
lays out the user's share folders. Target: ratio <= 1.05, judged on the
geometric mean of paired ratios (spawns of the same user on both hubs,
back to back, in ABBA order).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from processes import REPO, LocalHub  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import Targets  # noqa: E402

ROUNDS = 8
USERS = ["alice", "bob", "admin"]

STOCK_CONFIG = """
import sys
load_subconfig({config!r})
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = {args!r}
"""


def wait(hub: LocalHub, token: str, user: str, ready: bool, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = hub.api(token, "GET", f"users/{user}").json().get("servers", {}).get("")
        if (bool(server and server.get("ready")) if ready else server is None):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{user}'s server did not become {'ready' if ready else 'stopped'}")


def spawner_overhead_ms(tmp: Path, n: int = 200) -> float:
    """In process: the work LocalKubeAISpawner adds before the server process starts.

    Checking the choice against the catalog (store version check, access
    rules), laying out the share folders and building the environment, per
    spawn, in milliseconds. The rest of a spawn is the same code for both.
    """
    import asyncio
    from types import SimpleNamespace

    from jupyter_kubeai.local.spawner import LocalKubeAISpawner
    from jupyter_kubeai.store.catalog import CatalogStore
    from jupyter_kubeai.store.schema import open_engine, upgrade

    url = f"sqlite:///{tmp / 'overhead.sqlite'}"
    engine = open_engine(url)
    upgrade(engine)
    CatalogStore(engine).seed(images=[{"name": "python", "image": "x/python:3.11"}], profiles=[{"name": "small"}])
    user = SimpleNamespace(name="alice", id=1, url="/user/alice/", escaped_name="alice", server=None,
                           groups=[SimpleNamespace(name="vision")])
    spawner = LocalKubeAISpawner(user=user, share_root=str(tmp / "share"), catalog_url=url, local_gpus=0)

    async def once():
        await spawner._run_apply_user_options({"profile": "small", "image": "python"})
        spawner.share.ensure_user(user.name, spawner.project_names)
        spawner.kubeai_env()

    async def run():
        await once()  # engine and caches
        start = time.perf_counter()
        for _ in range(n):
            await once()
        return (time.perf_counter() - start) / n * 1000

    return asyncio.run(run())


def bootstrap_interval(ratios: list[float], rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the geometric mean of paired ratios."""
    import random

    rng = random.Random(7)
    means = sorted(
        statistics.geometric_mean(rng.choices(ratios, k=len(ratios))) for _ in range(rounds)
    )
    return means[int(0.025 * rounds)], means[int(0.975 * rounds)]


def spawn_once(hub: LocalHub, token: str, user: str, options: dict) -> float:
    start = time.perf_counter()
    r = hub.api(token, "POST", f"users/{user}/server", json=options)
    assert r.status_code in (201, 202), r.text
    wait(hub, token, user, ready=True)
    elapsed = time.perf_counter() - start
    hub.api(token, "DELETE", f"users/{user}/server")
    wait(hub, token, user, ready=False)
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stock_config = tmp / "stock_config.py"
        stock_config.write_text(STOCK_CONFIG.format(
            config=str(REPO / "jupyterhub_config.py"), homes=str(tmp / "homes"),
            args=["--allow-root"] if os.geteuid() == 0 else [],
        ))
        setups = {
            "SimpleLocalProcessSpawner": (stock_config, {}),
            "LocalKubeAISpawner": (None, {"profile": "small", "image": "python"}),
        }
        overhead = spawner_overhead_ms(tmp)
        hubs, tokens, results = {}, {}, {name: [] for name in setups}
        try:
            for name, (config, _) in setups.items():
                (tmp / name).mkdir()
                hubs[name] = LocalHub(tmp / name, config_file=config).start()
                tokens[name] = hubs[name].token("admin")
            # Interleaved, ABBA: both hubs see the same machine load and drift.
            order = list(setups)
            for round_ in range(ROUNDS + 1):  # round 0 warms caches; not counted
                for user in USERS:
                    for name in order:
                        elapsed = spawn_once(hubs[name], tokens[name], user, setups[name][1])
                        if round_:
                            results[name].append(elapsed)
                    order.reverse()
        finally:
            for hub in hubs.values():
                hub.stop()
    print(f"spawn to ready through the hub's REST API, {ROUNDS} rounds x {len(USERS)} users, "
          "both hubs running, spawns interleaved (ABBA), after a warm-up round")
    for name, times in results.items():
        print(f"  {name:26} median {statistics.median(times):.2f} s, mean {statistics.mean(times):.2f} s, "
              f"min {min(times):.2f} s, max {max(times):.2f} s")
    ours, stock = results["LocalKubeAISpawner"], results["SimpleLocalProcessSpawner"]
    ratio = statistics.median(ours) / statistics.median(stock)
    # Geometric mean of the paired ratios: symmetric, so the head start the
    # second spawn of a pair gets from warm file caches cancels out over the
    # ABBA order (a median would pick one order's mode).
    ratios = [a / b for a, b in zip(ours, stock)]
    paired = statistics.geometric_mean(ratios)
    low, high = bootstrap_interval(ratios)
    # Each pair is two spawns of the same user next to each other in time, so
    # the paired ratio cancels the machine's drift; the spread of single
    # spawns (seconds) is far wider than the difference being measured.
    print(f"ratio of medians ours/stock: {ratio:.3f}")
    print(f"geometric mean of paired ratios ours/stock: {paired:.3f} (95% interval {low:.3f}-{high:.3f})")
    print(f"LocalKubeAISpawner's own work per spawn (catalog check, share folders, environment): "
          f"{overhead:.2f} ms = {overhead / 1000 / statistics.median(stock) * 100:.3f}% of the stock median spawn")
    targets = Targets(__file__)
    targets.check("spawn-to-ready ours/stock <= 1.05 (geometric mean of paired ratios)", paired <= 1.05,
                  f"{paired:.3f} (95% interval {low:.3f}-{high:.3f})")
    targets.exit()


if __name__ == "__main__":
    main()
