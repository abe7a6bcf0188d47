"""Run every benchmark in this folder, one after the other.

``python bench/run.py [--allow-missing-baseline] [WORD ...]`` runs only those
whose file name contains one of the words (e.g. ``job_`` for the
training-job benchmarks). At the end it lists every target missed or not
measured (see ``bench/targets.py``) and every benchmark that crashed, and
exits non-zero if there was any (a target not measured only without
``--allow-missing-baseline``).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from targets import ENV_ALLOW, ENV_RESULTS, FLAG, NOT_MEASURED, OVER

here = Path(__file__).parent
args = sys.argv[1:]
allow_missing = FLAG in args
words = [a for a in args if a != FLAG]
crashed, missed, unmeasured = [], [], []
with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
    for script in sorted(here.glob("bench_*.py")):
        if words and not any(word in script.name for word in words):
            continue
        print(f"\n=== {script.name}", flush=True)
        results = Path(tmp) / f"{script.stem}.jsonl"
        env = {**os.environ, ENV_RESULTS: str(results)}
        if allow_missing:
            env[ENV_ALLOW] = "1"
        code = subprocess.call([sys.executable, str(script)], env=env)
        verdicts = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
        missed += [v for v in verdicts if v["status"] == OVER]
        unmeasured += [v for v in verdicts if v["status"] == NOT_MEASURED]
        # A non-zero exit that the verdicts do not explain: the benchmark itself failed.
        explained = any(v["status"] == OVER for v in verdicts) or (
            any(v["status"] == NOT_MEASURED for v in verdicts) and not allow_missing)
        if code != 0 and not explained:
            crashed.append(f"{script.name} (exit {code})")

print("\n=== summary")
for v in missed:
    print(f"  OVER TARGET   {v['script']}: {v['target']}: {v['detail']}")
for v in unmeasured:
    print(f"  NOT MEASURED  {v['script']}: {v['target']}: {v['detail']}" + (" (allowed)" if allow_missing else ""))
for c in crashed:
    print(f"  FAILED        {c}")
if missed or crashed or (unmeasured and not allow_missing):
    sys.exit(f"{len(missed)} target(s) missed, {len(unmeasured)} not measured, {len(crashed)} benchmark(s) failed")
print("  every target met" + (" or allowed as not measured" if unmeasured else ""))
