"""Kubernetes API requests per spawn: KubeAISpawner against stock KubeSpawner.

Both spawn the same pod (image, resources, the user's share volumes) through
the same HTTP-level fake API (tests/kubefake.py), which records every
request. For each spawner class: one warm-up spawn (it starts KubeSpawner's
shared pod and event watches), then N start/stop cycles counted. Done with
a shared PVC, and with a per-user PVC (created at the first spawn only).

Target: ratio ours/stock <= 1.0, plus one request per PVC that had to be
created. The catalog is read from SQL, never from the Kubernetes API.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kubespawner import KubeSpawner  # noqa: E402

from jupyter_kubeai.kube.objects import StorageConfig, make_volumes  # noqa: E402
from jupyter_kubeai.spawner import KubeAISpawner  # noqa: E402
from jupyter_kubeai.store.catalog import CatalogStore  # noqa: E402
from jupyter_kubeai.store.schema import open_engine, upgrade  # noqa: E402

from kubefake import FakeUser, fake_kubernetes, make_spawner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import Targets  # noqa: E402

N = 20
GROUPS = ["vision", "nlp"]


def seed(url: str) -> None:
    engine = open_engine(url)
    upgrade(engine)
    CatalogStore(engine).seed(
        images=[{"name": "base", "image": "quay.io/kubeai/base:1.0", "default": True}],
        profiles=[{"name": "small", "cpu_request": "500m", "cpu_limit": "1", "memory_request": "1Gi", "memory_limit": "2Gi", "default": True}],
    )
    engine.dispose()


def stock(user: FakeUser, user_pvc: bool) -> KubeSpawner:
    """The same pod from a stock KubeSpawner, configured by hand as an admin would."""
    volumes, mounts = make_volumes(StorageConfig(), user.name, GROUPS)
    spawner = make_spawner(
        user, image="quay.io/kubeai/base:1.0", cpu_guarantee=0.5, cpu_limit=1.0,
        mem_guarantee="1G", mem_limit="2G", storage_pvc_ensure=user_pvc,
    )
    if user_pvc:
        volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": spawner.pvc_name}}] + volumes
        mounts = [{"name": "home", "mountPath": "/home/jovyan"}] + mounts[1:]
    spawner.volumes, spawner.volume_mounts = volumes, mounts
    return spawner


async def count(kube, make, user_pvc: bool) -> tuple[float, Counter, int]:
    """Requests per start/stop cycle over N cycles (after a warm-up), and PVC creates."""
    warm = make(FakeUser("warmup", groups=GROUPS), user_pvc)
    if isinstance(warm, KubeAISpawner):
        await warm._run_apply_user_options({})
    await warm.start()
    await warm.stop()
    before = len(kube.calls)
    for i in range(N):
        spawner = make(FakeUser(f"user-{i}", groups=GROUPS), user_pvc)
        if isinstance(spawner, KubeAISpawner):
            await spawner._run_apply_user_options({})  # the catalog check the hub runs first
        await spawner.start()
        await spawner.stop()
    calls = kube.calls[before:]
    keys = kube.tally(calls)
    pvc_creates = keys.get("create persistentvolumeclaims", 0)
    return len(calls) / N, keys, pvc_creates


async def main() -> None:
    targets = Targets(__file__)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'kubeai.sqlite'}"
        seed(url)

        def ours(user, user_pvc):
            return make_spawner(user, spawner_class=KubeAISpawner, catalog_url=url, user_pvc=user_pvc)

        for user_pvc in (False, True):
            results = {}
            for name, make in (("stock KubeSpawner", stock), ("KubeAISpawner", ours)):
                async with fake_kubernetes(Path(tmp) / f"kubeconfig-{name[:5]}-{user_pvc}") as kube:
                    results[name] = await count(kube, make, user_pvc)
            storage = "per-user PVC" if user_pvc else "shared PVC"
            print(f"\n{storage}: {N} start/stop cycles each, after one warm-up spawn")
            for name, (per_spawn, keys, pvcs) in results.items():
                detail = ", ".join(f"{k} {v / N:g}" for k, v in sorted(keys.items()))
                print(f"  {name:18} {per_spawn:5.2f} requests/spawn ({detail})")
            ours_n, stock_n = results["KubeAISpawner"][0], results["stock KubeSpawner"][0]
            ratio = ours_n / stock_n
            pvc_extra = results["KubeAISpawner"][2] / N
            print(f"  ratio ours/stock: {ratio:.2f} (PVC creates per spawn: {pvc_extra:g})")
            targets.check(f"{storage}: requests per spawn <= stock KubeSpawner's + PVC creates", ours_n <= stock_n + pvc_extra,
                          f"{ours_n:.2f} vs {stock_n:.2f} + {pvc_extra:g}, ratio {ratio:.2f}")
    targets.exit()


if __name__ == "__main__":
    asyncio.run(main())
