"""Compare two run directories byte for byte, apart from timestamps, timings, trial ids (Ray's random ids are
mapped to genome ids), node ids and paths: does a refactor leave a run unchanged?

    python bench/compare_runs.py OLD_RUN NEW_RUN

Run the same command (``--max-concurrent 1``, same ``--seed``) with the old code (``git worktree add /tmp/old
REV``; ``PYTHONPATH=/tmp/old python -m asc_search.cli ...``) and the new. Prints the files only one run has and
every file that differs after masking; ``tune/`` and ``cache/`` are skipped (Ray's own bookkeeping). Binary files
that hold timings (``model.pt``'s metrics, ``optuna.db``) and plots titled with the run's name differ by design.
"""

import csv
import re
import sys
from pathlib import Path

a, b = Path(sys.argv[1]), Path(sys.argv[2])
SKIP_DIRS = ("tune/", "cache/")
TIMING = re.compile(r'("?(?:[a-z_0-9]*_s|[a-z_]*_at|time|timestamp|[a-z_0-9]*latency[a-z_0-9]*|[a-z_0-9]*_ms(?:_[a-z_0-9]*)?|seconds_computing|gcs_address|driver_node_id|node_id|node_ip|pid|hostname)"?\s*[:=]\s*)("[^"]*"|[-0-9.e+]+)')
def ids(root):
    with open(root / "trials.csv") as f:
        return {r["trial_id"]: f"G{r['genome_id']}" for r in csv.DictReader(f) if r["genome_id"]}
def norm(text, root, m):
    text = text.replace(str(root), "RUN")
    for k, v in m.items():
        text = text.replace(k, v)
    text = re.sub(r"\b[0-9a-f]{8}\b(?= \(\d)", "NODE", text)  # report.md node ids
    text = re.sub(r"Trials per node: .*", "Trials per node: X", text)
    return TIMING.sub(lambda mm: mm.group(1) + "X", text)
ma, mb = ids(a), ids(b)
def files(r, m):
    out = {}
    for p in r.rglob("*"):
        rel = str(p.relative_to(r))
        if p.is_file() and not rel.startswith(SKIP_DIRS):
            key = rel
            for k, v in m.items():
                key = key.replace(k, v)
            out[key] = p
    return out
fa, fb = files(a, ma), files(b, mb)
print("only in old:", sorted(set(fa) - set(fb)))
print("only in new:", sorted(set(fb) - set(fa)))
same, diffs = 0, []
for f in sorted(set(fa) & set(fb)):
    x, y = fa[f].read_bytes(), fb[f].read_bytes()
    if x == y:
        same += 1
        continue
    try:
        tx, ty = norm(x.decode(), a, ma), norm(y.decode(), b, mb)
        if tx == ty:
            same += 1
            continue
        lx, ly = tx.splitlines(), ty.splitlines()
        d = [(i, p[:150], q[:150]) for i, (p, q) in enumerate(zip(lx, ly, strict=False)) if p != q][:3]
        diffs.append(f"DIFF text {f}: {len(lx)} vs {len(ly)} lines; first: {d}")
    except UnicodeDecodeError:
        diffs.append(f"DIFF binary {f}: {len(x)} vs {len(y)} bytes")
print("\n".join(diffs))
print(f"same {same}, differ {len(diffs)}")
