#!/usr/bin/env bash
# Compatibility-aware training evidence: negative flips and ACC with and without --compat, for naive
# and gpm, on permuted-fmnist (domain-IL) and split-fmnist (task-IL and class-IL), over seeds.
#   scripts/compat-evidence.sh [OUT_DIR] [SEEDS...]      (defaults: runs/compat-evidence, seeds 0 1 2)
# Each run: 5 tasks, --train-limit 5000 --test-limit 2000, one thread. Writes OUT_DIR/results.csv
# (one row per run, read from each run's report.json) and prints the mean ± sd table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/compat-evidence}
shift || true
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(0 1 2)
bin=build/tools/strata
mkdir -p "$out"
csv="$out/results.csv"
echo "scenario,method,compat,seed,acc,nf,n" > "$csv"
for seed in "${seeds[@]}"; do
  for scenario in domain task class; do
    if [ "$scenario" = domain ]; then stream=(--stream permuted-fmnist); else stream=(--stream split-fmnist --scenario "$scenario"); fi
    for method in naive gpm; do
      for compat in none focal muscle; do
        name="$scenario-$method-$compat-s$seed"
        extra=()
        # split streams: every later task's classes are new, so focal keeps samples only with
        # --compat-drop-new-classes false (the default refuses: it would drop every sample).
        if [ "$compat" = focal ] && [ "$scenario" != domain ]; then extra=(--compat-drop-new-classes false); fi
        rm -rf "$out/$name"
        "$bin" train "${stream[@]}" --tasks 5 --train-limit 5000 --test-limit 2000 --threads 1 --seed "$seed" \
          --method "$method" --compat "$compat" "${extra[@]}" --out "$out" --name "$name" --quiet > /dev/null
        python3 - "$out/$name/report.json" "$scenario" "$method" "$compat" "$seed" >> "$csv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
nf = n = 0
for p in r["compat"]["pairs"]:
    o = p["seen_tasks"]["overall"]
    nf += o["counts"]["n10"]; n += o["n"]
print(",".join(sys.argv[2:6] + ["%.4f" % r["metrics"]["acc"], str(nf), str(n)]))
PY
      done
    done
  done
done
python3 - "$csv" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1])))
key = lambda r: (r["scenario"], r["method"])
print("| scenario | method | --compat | ACC % (mean ± sd) | NF (mean ± sd) | NF change | ΔACC pts | goal |")
print("|---|---|---|---|---|---|---|---|")
for g in sorted({key(r) for r in rows}):
    base = [r for r in rows if key(r) == g and r["compat"] == "none"]
    b_acc = st.mean(100 * float(r["acc"]) for r in base); b_nf = st.mean(int(r["nf"]) for r in base)
    for c in ("none", "focal", "muscle"):
        rs = [r for r in rows if key(r) == g and r["compat"] == c]
        if not rs: continue
        acc = [100 * float(r["acc"]) for r in rs]; nf = [int(r["nf"]) for r in rs]
        sd = lambda v: st.stdev(v) if len(v) > 1 else 0.0
        ch = "–" if c == "none" else "%+.0f%%" % (100 * (st.mean(nf) - b_nf) / max(b_nf, 1e-9))
        da = "–" if c == "none" else "%+.2f" % (st.mean(acc) - b_acc)
        ok = "–" if c == "none" else ("yes" if st.mean(nf) <= 0.6 * b_nf and st.mean(acc) >= b_acc - 1 else "no")
        print("| %s | %s | %s | %.2f ± %.2f | %.0f ± %.0f | %s | %s | %s |" % (g[0], g[1], c, st.mean(acc), sd(acc), st.mean(nf), sd(nf), ch, da, ok))
PY
