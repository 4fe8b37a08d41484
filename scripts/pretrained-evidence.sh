#!/usr/bin/env bash
# Pre-trained-regime evidence: every method against naive and joint, starting from a backbone
# pre-trained inside Strata, for the MLP, the CNN and the ViT, over seeds.
#
#   scripts/pretrained-evidence.sh [OUT_DIR]        (default runs/pretrained-evidence)
#
# Per model and seed (3 tasks; the pairs coat/shirt, sandal/sneaker, bag/ankle boot, so that
# task-IL is not trivial):
#   1. pre-training: a plain run (naive) of one task holding Fashion-MNIST classes 0-3 (4-way head);
#      its version versions/v000.h5 is the backbone;
#   2. per method and scenario: the stream of the other classes (4,6 | 5,7 | 8,9: 3 tasks of 2
#      classes) started from that version with --init v000.h5 --init-head reset (the stream's head is
#      10-way, the version's 4-way: the classifier starts fresh, every other tensor is loaded).
#      Scenarios: task / class = task- and class-incremental on those new classes; domain =
#      rotated-fmnist, 3 tasks of all 10 classes at 0, 60 and 120 degrees (domain-IL, shared head),
#      from the same backbone.
# Each method runs with its own defaults (the recipes of olora/codyra/mora included: no optimizer
# option is given), --threads 1. Writes OUT_DIR/results.csv (one row per run, read from each run's
# report.json) and prints the mean ± sd tables (population sd over the seeds).
#
# Knobs (environment): MODELS ("mlp cnn vit"), METHODS (every registered method), SEEDS ("0 1 2"),
# SCENARIOS ("task class domain"), TRAIN_LIMIT (per stream task, 2000), TEST_LIMIT (per task, 500),
# EPOCHS (per stream task, 3), BATCH (32), PRE_TRAIN_LIMIT (8000), PRE_EPOCHS (4),
# VIT_OPTS ("--patch 7 --dim 32 --depth 2 --heads 4 --mlp-dim 64"), STRATA (build/tools/strata),
# KEEP_RUNS (0: run folders of the stream runs are deleted after their row is read, except report.json
# and config.ini).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/pretrained-evidence}
bin=${STRATA:-build/tools/strata}
models=(${MODELS:-mlp cnn vit})
methods=(${METHODS:-naive joint gpm coso osft lora olora codyra mora})
seeds=(${SEEDS:-0 1 2})
scenarios=(${SCENARIOS:-task class domain})
train_limit=${TRAIN_LIMIT:-2000}
test_limit=${TEST_LIMIT:-500}
epochs=${EPOCHS:-3}
batch=${BATCH:-32}
pre_train_limit=${PRE_TRAIN_LIMIT:-8000}
pre_epochs=${PRE_EPOCHS:-4}
vit_opts=(${VIT_OPTS:---patch 7 --dim 32 --depth 2 --heads 4 --mlp-dim 64})
mkdir -p "$out"
csv="$out/results.csv"
[ -f "$csv" ] || echo "model,scenario,method,seed,acc,bwt,forgetting,train_seconds,steps,ms_per_step,pre_acc" > "$csv"

model_opts() {
  case "$1" in
    vit) echo --model vit "${vit_opts[@]}" ;;
    *) echo --model "$1" ;;
  esac
}

for model in "${models[@]}"; do
  for seed in "${seeds[@]}"; do
    pre="pre-$model-s$seed"
    if [ ! -f "$out/$pre/versions/v000.h5" ]; then
      rm -rf "${out:?}/$pre"
      "$bin" train --stream split --dataset fmnist --class-order 0,1,2,3 --first-task-classes 4 --tasks 1 \
        --scenario class $(model_opts "$model") --method naive --epochs "$pre_epochs" --batch-size "$batch" \
        --train-limit "$pre_train_limit" --test-limit "$test_limit" --seed "$seed" --threads 1 \
        --out "$out" --name "$pre" --quiet > /dev/null
    fi
    pre_acc=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["metrics"]["acc"])' "$out/$pre/report.json")
    for scenario in "${scenarios[@]}"; do
      for method in "${methods[@]}"; do
        name="$model-$scenario-$method-s$seed"
        if grep -q "^$model,$scenario,$method,$seed," "$csv"; then continue; fi  # already measured
        rm -rf "${out:?}/$name"
        if [ "$scenario" = domain ]; then
          stream=(--stream rotated-fmnist --tasks 3)    # all 10 classes at 0, 60, 120 degrees
        else
          stream=(--stream split --dataset fmnist --class-order 4,6,5,7,8,9 --classes-per-task 2 --tasks 3 --scenario "$scenario")
        fi
        if ! "$bin" train "${stream[@]}" $(model_opts "$model") --init "$out/$pre/versions/v000.h5" --init-head reset \
            --method "$method" --epochs "$epochs" --batch-size "$batch" --train-limit "$train_limit" \
            --test-limit "$test_limit" --seed "$seed" --threads 1 --out "$out" --name "$name" --quiet \
            > "$out/$name.log" 2>&1; then
          echo "FAILED: $name (see $out/$name.log)" >&2
          continue
        fi
        python3 - "$out/$name/report.json" "$model" "$scenario" "$method" "$seed" "$pre_acc" >> "$csv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["metrics"]
secs = sum(t["train_seconds"] for t in r["timing"])
steps = sum(t["steps"] for t in r["timing"])
print(",".join(sys.argv[2:6] + ["%.4f" % m["acc"], "%.4f" % m["bwt"], "%.4f" % m["forgetting"],
                                "%.3f" % secs, str(steps), "%.4f" % (1000 * secs / steps), sys.argv[6]]))
PY
        if [ "${KEEP_RUNS:-0}" = 0 ]; then
          find "$out/$name" -mindepth 1 ! -name report.json ! -name config.ini -delete
        fi
        rm -f "$out/$name.log"
      done
    done
  done
done

python3 - "$csv" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1])))
sd = lambda v: st.pstdev(v) if len(v) > 1 else 0.0
for model in dict.fromkeys(r["model"] for r in rows):
    pre = {r["seed"]: float(r["pre_acc"]) for r in rows if r["model"] == model}
    print("\n### %s (pre-training on classes 0-3: test ACC %s)\n" % (model, ", ".join("%.2f" % (100 * v) for v in pre.values())))
    print("| scenario | method | seeds | ACC | BWT | ms/step | × naive ms/step | ACC − naive | ACC − joint |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scenario in dict.fromkeys(r["scenario"] for r in rows if r["model"] == model):
        g = [r for r in rows if r["model"] == model and r["scenario"] == scenario]
        mean_acc = lambda m: st.mean(100 * float(r["acc"]) for r in g if r["method"] == m) if any(r["method"] == m for r in g) else None
        naive, joint = mean_acc("naive"), mean_acc("joint")
        naive_ms = {r["seed"]: float(r["ms_per_step"]) for r in g if r["method"] == "naive"}
        for method in dict.fromkeys(r["method"] for r in g):
            rs = [r for r in g if r["method"] == method]
            acc = [100 * float(r["acc"]) for r in rs]; bwt = [100 * float(r["bwt"]) for r in rs]
            ms = [float(r["ms_per_step"]) for r in rs]
            ratio = [float(r["ms_per_step"]) / naive_ms[r["seed"]] for r in rs if r["seed"] in naive_ms]
            d = lambda ref: "–" if ref is None or method in ("naive", "joint") and ref == st.mean(acc) else "%+.2f" % (st.mean(acc) - ref)
            print("| %s | %s | %d | %.2f ± %.2f | %.2f ± %.2f | %.2f | %s | %s | %s |" % (
                scenario, method, len(rs), st.mean(acc), sd(acc), st.mean(bwt), sd(bwt), st.median(ms),
                "%.2f" % st.median(ratio) if ratio else "–", d(naive), d(joint)))
PY
