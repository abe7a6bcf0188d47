"""The benchmarks' targets: one place that prints each verdict and sets the exit status.

Every ``bench_*.py`` records its targets here::

    targets = Targets("bench_x.py")            # or Targets.from_args(args) with add_argument(parser)
    targets.check("p99 < 50 ms", p99 < 50, f"p99 {p99:.1f} ms")
    targets.not_measured("3x KServe req/s", "KServe could not be installed: ...")
    targets.exit()                              # prints the summary and exits

Verdicts: ``OK``, ``OVER TARGET`` (measured and missed) and ``NOT MEASURED``
(the figure or its baseline could not be had; the reason is printed).
Exit status: 1 when a target was missed; else 2 when a target was not
measured, unless ``--allow-missing-baseline`` (or the environment variable
``KUBEAI_BENCH_ALLOW_MISSING=1``) is given; else 0. A benchmark that
crashes exits non-zero on its own (1, with its traceback).

When ``KUBEAI_BENCH_RESULTS`` names a file, each verdict is appended to it
as one JSON line (``bench/run.py`` reads them for its summary).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

OK, OVER, NOT_MEASURED = "OK", "OVER TARGET", "NOT MEASURED"
FLAG = "--allow-missing-baseline"
ENV_ALLOW = "KUBEAI_BENCH_ALLOW_MISSING"
ENV_RESULTS = "KUBEAI_BENCH_RESULTS"
EXIT_MISSED, EXIT_NOT_MEASURED = 1, 2


def add_argument(parser) -> None:
    """Give an argparse parser the ``--allow-missing-baseline`` flag."""
    parser.add_argument(FLAG, dest="allow_missing_baseline", action="store_true",
                        help="exit 0 even when a target could not be measured (e.g. its baseline could not be installed); "
                             "missed targets still fail")


class Targets:
    def __init__(self, script: str, allow_missing: bool | None = None):
        self.script = Path(script).name
        if allow_missing is None:
            allow_missing = FLAG in sys.argv[1:] or os.environ.get(ENV_ALLOW, "") not in ("", "0")
        self.allow_missing = allow_missing
        self.results: list[dict] = []

    @classmethod
    def from_args(cls, script: str, args) -> "Targets":
        flag = bool(getattr(args, "allow_missing_baseline", False))
        return cls(script, flag or os.environ.get(ENV_ALLOW, "") not in ("", "0"))

    def _record(self, name: str, status: str, detail: str) -> None:
        self.results.append({"script": self.script, "target": name, "status": status, "detail": detail})
        print(f"  [{status}] {name}" + (f": {detail}" if detail else ""), flush=True)
        results = os.environ.get(ENV_RESULTS)
        if results:
            with open(results, "a") as f:
                f.write(json.dumps(self.results[-1]) + "\n")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """A measured target: ``name`` says what the target is, ``detail`` what was measured."""
        self._record(name, OK if ok else OVER, detail)
        return ok

    def not_measured(self, name: str, reason: str) -> None:
        """A target this run could not measure, and why."""
        self._record(name, NOT_MEASURED, reason)

    def status(self) -> int:
        statuses = {r["status"] for r in self.results}
        if OVER in statuses:
            return EXIT_MISSED
        if NOT_MEASURED in statuses and not self.allow_missing:
            return EXIT_NOT_MEASURED
        return 0

    def exit(self) -> None:
        """Print the summary line and exit with :meth:`status`."""
        missed = [r["target"] for r in self.results if r["status"] == OVER]
        unmeasured = [r["target"] for r in self.results if r["status"] == NOT_MEASURED]
        ok = sum(r["status"] == OK for r in self.results)
        parts = [f"{ok} OK"]
        if missed:
            parts.append(f"{len(missed)} OVER TARGET ({'; '.join(missed)})")
        if unmeasured:
            allowed = " (allowed by " + FLAG + ")" if self.allow_missing else " (pass " + FLAG + " to accept)"
            parts.append(f"{len(unmeasured)} NOT MEASURED ({'; '.join(unmeasured)}){allowed}")
        print(f"{self.script} targets: {', '.join(parts)}", flush=True)
        sys.exit(self.status())
