#!/usr/bin/env bash
# Trains and verifies the rows of the accuracy table of issue 5 (docs/benchmarks.md):
# every configs/table/*.toml, or the configs named on the command line, in that order.
#
#   scripts/accuracy-table.sh                       # all rows (about 9 minutes each on 2 cores)
#   scripts/accuracy-table.sh configs/table/b-*.toml
#   scripts/accuracy-table.sh --table               # the finished rows as a markdown table
#
# A row whose evaluation file exists is skipped, and an interrupted row resumes from its newest
# checkpoint, so the script can be stopped and started again. Rows named a-* follow protocol A
# (train LFW minus CFP, verify CFP-FF and CFP-FP), b-* protocol B (train CFP minus LFW, verify
# LFW); the packs come first (commands in configs/protocol-a-k4.toml and protocol-b-k4.toml).
# PM is the `pm` binary to use (default: a release build of this checkout); DATA the shared data.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PM_SHARED_DATA:-../shared/data}

if [[ ${1:-} == --table ]]; then
    # One line per row and protocol: the trained encoder's mean ± std over the 10 folds, and the
    # mean over seeds of rows that differ only in a -seedN suffix.
    exec python3 - <<'EOF_PY'
import collections, glob, json, os, re, statistics
rows = collections.defaultdict(dict)
for path in sorted(glob.glob("runs/table/*/eval-*.json")):
    name = os.path.basename(os.path.dirname(path))
    protocol = os.path.basename(path)[5:-5]
    trained = [e for e in json.load(open(path)) if e["model"] == "trained encoder"]
    if not trained:
        raise SystemExit(f"{path}: no 'trained encoder' entry")
    trained = trained[0]
    base, seed = re.fullmatch(r"(.*?)(?:-seed(\d+))?", name).groups()
    rows[(base, protocol)][int(seed or 0)] = trained["accuracy"]
print("| row | protocol | first seed: mean ± std (%) | seeds | mean ± std over seeds (%) |")
print("|---|---|---:|---|---:|")
for (base, protocol), by_seed in sorted(rows.items()):
    seeds = sorted(by_seed)
    means = [100 * by_seed[s]["mean"] for s in seeds]
    first = by_seed[seeds[0]]
    over = (f"{statistics.mean(means):.2f} ± {statistics.pstdev(means):.2f}"
            if len(means) > 1 else "")
    print(f"| {base} | {protocol} | {100 * first['mean']:.2f} ± {100 * first['std']:.2f} "
          f"| {', '.join(map(str, seeds))} | {over} |")
EOF_PY
fi
if [[ -z ${PM:-} ]]; then
    cargo build --release -p pm-cli
    PM=target/release/pm
fi

configs=("$@")
[[ ${#configs[@]} -gt 0 ]] || configs=(configs/table/*.toml)
for config in "${configs[@]}"; do
    name=$(basename "$config" .toml)
    run=runs/table/$name
    case $name in
        a-*) evals=(cfp-ff cfp-fp) done_file=$run/eval-cfp_fp.json ;;
        b-*) evals=(lfw) done_file=$run/eval-lfw.json ;;
        *) echo "$config: expected a name starting a- or b- (the protocol)" >&2; exit 2 ;;
    esac
    if [[ -f $done_file ]]; then
        echo "== $name: done ($done_file)"
        continue
    fi
    echo "== $name: training ($(date -u +%H:%M:%S))"
    # A run directory, even without a checkpoint yet, refuses a fresh start: resume it.
    if [[ -d $run ]]; then
        "$PM" train --config "$config" --resume
    else
        "$PM" train --config "$config"
    fi
    for protocol in "${evals[@]}"; do
        case $protocol in
            lfw) "$PM" eval --run "$run" --protocol lfw --data "$DATA/lfw/images" --crop-fraction 0.5 ;;
            *) "$PM" eval --run "$run" --protocol "$protocol" --data "$DATA/cfp" ;;
        esac
    done
done
