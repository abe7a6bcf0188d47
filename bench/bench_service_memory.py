"""Memory of the hub service with a 200-entry catalog loaded.

Starts the real local hub twice: with the demo catalog (3 sizes, 1 image:
the baseline), and with the 200-entry catalog of bench_spawn_options.py.
Each time the service is made to load and serve the whole catalog (the admin
listing, and users' views), then its resident memory (VmRSS) is read from
/proc. Target: under 150 MB with the catalog loaded.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_spawn_options import make_catalog  # noqa: E402
from processes import LocalHub  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import Targets  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def measure(workdir: Path, catalog_file: Path | None) -> tuple[float, int]:
    env = {"KUBEAI_INITIAL_CATALOG": str(catalog_file)} if catalog_file else {}
    hub = LocalHub(workdir, env=env).start()
    try:
        service = hub.url + "/services/kubeai/api/"
        admin = {"Authorization": f"token {hub.token('admin')}"}
        alice = {"Authorization": f"token {hub.token('alice')}"}
        for _ in range(50):
            entries = requests.get(service + "admin/catalog", headers=admin).json()
            requests.get(service + "catalog", headers=alice).raise_for_status()
        count = len(entries["images"]) + len(entries["profiles"]) + len(entries["image_rules"])
        [pid] = hub.service_pids()
        return rss_mb(pid), count
    finally:
        hub.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp / "catalog.yaml"
        big.write_text(yaml.safe_dump(make_catalog(random.Random(42))))
        (tmp / "demo").mkdir()
        (tmp / "big").mkdir()
        demo_mb, demo_n = measure(tmp / "demo", None)
        big_mb, big_n = measure(tmp / "big", big)
    print(f"hub service RSS with the demo catalog ({demo_n} entries): {demo_mb:.1f} MB (baseline)")
    print(f"hub service RSS with {big_n} catalog entries loaded and served: {big_mb:.1f} MB")
    print(f"ratio: {big_mb / demo_mb:.2f}")
    targets = Targets(__file__)
    targets.check(f"hub service RSS with {big_n} catalog entries under 150 MB", big_mb < 150,
                  f"{big_mb:.1f} MB (baseline {demo_mb:.1f} MB)")
    targets.exit()


if __name__ == "__main__":
    main()
