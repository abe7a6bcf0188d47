"""Run every benchmark in this folder, one after the other.

``python bench/run.py [WORD ...]`` runs only those whose file name contains
one of the words (e.g. ``job_`` for the training-job benchmarks).
"""

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
words = sys.argv[1:]
failed = []
for script in sorted(here.glob("bench_*.py")):
    if words and not any(word in script.name for word in words):
        continue
    print(f"\n=== {script.name}", flush=True)
    if subprocess.call([sys.executable, str(script)]) != 0:
        failed.append(script.name)
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
