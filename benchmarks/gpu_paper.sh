#!/usr/bin/env bash
# What the open GPU goals need, in one call (issues 20, 21, 23): the start-up breakdown on CUDA, and
# the paper's LeNet figure end to end from its preset (5 seeds, ticket + reinit, 50K iterations, 20
# rounds; the seeds' networks of a level as one stack) against issue 23's goal of 15 minutes on one
# H200. Run from the project root with lth importable and MNIST's raw files under
# $LTH_DATA_DIR/MNIST/raw (../shared/GPU.md says how on the lent H200); logs under $OUT (default
# /tmp/out). Cut short by FIGURE_LIMIT (seconds, default 420), the figure's folders say how far it
# got; the same command again continues it (on a machine still warm).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"

echo "== 1. where an experiment's time goes besides training, on CUDA (benchmarks/startup.py)"
timeout 90 python3 -m benchmarks.startup --device cuda --repeats 2 --data-root "$LTH_DATA_DIR" 2>&1 | tail -12 \
    | tee "$OUT/startup.txt"

echo "== 2. the paper's LeNet figure: python -m lth.run -m experiment=paper/lenet_mnist trainer=gpu"
SECONDS=0
timeout "${FIGURE_LIMIT:-420}" python3 -m lth.run -m experiment=paper/lenet_mnist trainer=gpu data.root="$LTH_DATA_DIR" \
    logger=none trainer.enable_progress_bar=false hydra.sweep.dir=/tmp/figure 2>&1 | tail -25 | tee "$OUT/figure.txt"
echo "exit ${PIPESTATUS[0]} after ${SECONDS}s" | tee -a "$OUT/figure.txt"
for d in /tmp/figure/*/; do
    echo "$(basename "$d"): $(find "$d" -name row.json | wc -l) networks finished"
done 2>&1 | tee -a "$OUT/figure.txt"
cp /tmp/figure/report.md /tmp/figure/summary.csv /tmp/figure/*.png "$OUT/" 2>/dev/null
true
