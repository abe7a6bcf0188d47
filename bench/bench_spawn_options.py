"""Spawn options for 1,000 users × 200 catalog entries.

For each user (random hub groups), the hub computes what they may use and
renders the spawn form: ``user_view`` + ``profile_list`` + ``render_form``,
with the catalog read through ``CatalogReader`` from a real SQLite store
(version check per form, entries loaded once). Target: under 20 ms per user.

Baseline in the same run: KubeSpawner rendering its own form for a static
``profile_list`` of the same size (what a stock hub does with no per-user
catalog), so the ratio is the cost of per-user access rules.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jinja2 import Environment, PackageLoader

from jupyter_kubeai.catalog.access import profile_list, user_view
from jupyter_kubeai.catalog.form import render_form
from jupyter_kubeai.catalog.reader import CatalogReader
from jupyter_kubeai.store.catalog import CatalogStore
from jupyter_kubeai.store.schema import open_engine, upgrade

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import Targets  # noqa: E402

USERS, IMAGES, PROFILES, RULES = 1000, 100, 80, 20
GROUPS = [f"team-{i}" for i in range(40)]


def make_catalog(rng: random.Random) -> dict:
    def groups():
        return [] if rng.random() < 0.4 else rng.sample(GROUPS, rng.randint(1, 3))

    return {
        "images": [{"name": f"image-{i}", "image": f"registry.example.org/lab/image-{i}:1.{i}", "description": f"Image {i}",
                    "groups": groups(), "default": i == 0} for i in range(IMAGES)],
        "profiles": [{"name": f"size-{i}", "cpu_limit": str(1 + i % 16), "memory_limit": f"{2 + i % 64}Gi",
                      "gpus": (1 if i % 4 == 0 else 0), "max_gpus": (4 if i % 4 == 0 else 0),
                      "groups": groups(), "default": i == 0} for i in range(PROFILES)],
        "image_rules": [{"name": f"rule-{i}", "pattern": f"registry\\\\.example\\\\.org/team-{i}/.+", "groups": [GROUPS[i]]}
                        for i in range(RULES)],
    }


def main() -> None:
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'kubeai.sqlite'}"
        engine = open_engine(url)
        upgrade(engine)
        seed = make_catalog(rng)
        CatalogStore(engine).seed(images=seed["images"], profiles=seed["profiles"], rules=seed["image_rules"])
        reader = CatalogReader.for_url(url)
        users = [rng.sample(GROUPS, rng.randint(0, 4)) for _ in range(USERS)]

        ours, entries = [], []
        for groups in users:
            start = time.perf_counter()
            view = user_view(reader.current(), groups)
            html = render_form(view, {"profile": "size-1", "image": "image-2"})
            ours.append((time.perf_counter() - start) * 1000)
            entries.append(len(view.profiles) + len(view.images))
        assert html

        # Baseline: KubeSpawner's own form over one static profile_list of every
        # size and image (a stock hub's form, with no per-user rules).
        everything = profile_list(user_view(reader.current(), GROUPS))
        env = Environment(loader=PackageLoader("kubespawner", "templates"), autoescape=True)
        template = env.get_template("form.html")
        stock = []
        for _ in range(USERS):
            start = time.perf_counter()
            template.render(profile_list=everything, user_options={})
            stock.append((time.perf_counter() - start) * 1000)

    def p(values, q):
        return statistics.quantiles(values, n=100)[q - 1]

    print(f"{USERS} users, {IMAGES + PROFILES + RULES} catalog entries ({IMAGES} images, {PROFILES} sizes, {RULES} image rules)")
    print(f"images + sizes per user's form: median {statistics.median(entries):.0f}, max {max(entries)}")
    print(f"per-user spawn options (store version check + access + form): mean {statistics.mean(ours):.2f} ms, "
          f"p50 {statistics.median(ours):.2f} ms, p99 {p(ours, 99):.2f} ms, max {max(ours):.2f} ms")
    print(f"baseline, KubeSpawner form of the full static list: mean {statistics.mean(stock):.2f} ms, p99 {p(stock, 99):.2f} ms")
    print(f"ratio ours/baseline (mean): {statistics.mean(ours) / statistics.mean(stock):.2f}")
    target = 20.0
    targets = Targets(__file__)
    targets.check(f"spawn options under {target:.0f} ms per user (p99)", p(ours, 99) < target, f"p99 {p(ours, 99):.2f} ms")
    targets.exit()


if __name__ == "__main__":
    main()
