#!/usr/bin/env bash
# Trains and verifies the rows of the accuracy table of issue 5 (docs/benchmarks.md):
# every configs/table/*.toml, or the configs named on the command line, in that order.
#
#   scripts/accuracy-table.sh                       # all rows (about 9 minutes each on 2 cores)
#   scripts/accuracy-table.sh configs/table/b-*.toml
#
# A row whose evaluation file exists is skipped, and an interrupted row resumes from its newest
# checkpoint, so the script can be stopped and started again. Rows named a-* follow protocol A
# (train LFW minus CFP, verify CFP-FF and CFP-FP), b-* protocol B (train CFP minus LFW, verify
# LFW); the packs come first (commands in configs/protocol-a-k4.toml and protocol-b-k4.toml).
# PM is the `pm` binary to use (default: a release build of this checkout); DATA the shared data.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PM_SHARED_DATA:-../shared/data}
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
    resume=()
    [[ -d $run/checkpoints ]] && resume=(--resume)
    "$PM" train --config "$config" "${resume[@]}"
    for protocol in "${evals[@]}"; do
        case $protocol in
            lfw) "$PM" eval --run "$run" --protocol lfw --data "$DATA/lfw/images" --crop-fraction 0.5 ;;
            *) "$PM" eval --run "$run" --protocol "$protocol" --data "$DATA/cfp" ;;
        esac
    done
done
