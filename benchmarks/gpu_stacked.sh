#!/usr/bin/env bash
# Stacked training on a GPU (issue 23), in one go: throughput, correctness on CUDA (with the CUDA
# graph), benchmarks/run.py, and a measured fraction of a paper LeNet experiment. Run from the
# project root with lth importable and MNIST's raw files under $LTH_DATA_DIR/MNIST/raw
# (../shared/GPU.md says how on the lent H200). Writes its logs under $OUT (default /tmp/out).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LTH_TEST_TRAINER=gpu PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"

echo "== 1. stacked LeNet-300-100 network-steps/s (CUDA graph, and eager)"
timeout 60 python3 -m benchmarks.stacked --device cuda --sizes 1,10,16,64 --reps 2 --steps 500 --warmup 50 --eager \
    2>&1 | grep -v Warning | tee "$OUT/stacked.txt"

echo "== 2. stacked = alone on CUDA, float64, CUDA graph (tests/test_stacked.py with trainer=gpu)"
timeout 90 python3 -m pytest tests/test_stacked.py -x -q -p no:cacheprovider --durations=5 -W ignore \
    -k "float64 or milestones or diverging" 2>&1 | tail -25 | tee "$OUT/tests.txt"
timeout 60 python3 -m pytest tests/test_seed_stacking.py -x -q -p no:cacheprovider --durations=3 -W ignore \
    -k "float64 or different_levels" 2>&1 | tail -8 | tee -a "$OUT/tests.txt"   # seed trials stacked = alone

echo "== 3. benchmarks/run.py on CUDA (LeNet; section 6: 16 stacked)"
timeout 45 python3 -m benchmarks.run --device cuda --reps 1 --models LeNet-300-100 --stacked 16 \
    2>&1 | tail -32 | tee "$OUT/run.txt"

echo "== 4. a LeNet lottery on MNIST, 2,000 iterations: the dense round (a stack of one), level 1 ticket+reinit stacked"
SECONDS=0
timeout 35 python3 -m lth.run model=lenet300_100 logger=none trainer=gpu "controls=[reinit]" prune.rounds=1 \
    train.iterations=2000 eval_every=100 checkpoint_every=1000 trainer.enable_progress_bar=false \
    stack_networks=true hydra.run.dir=/tmp/lottery 2>&1 | tail -6 | tee "$OUT/lottery.txt"
echo "whole command: ${SECONDS}s" | tee -a "$OUT/lottery.txt"
cat /tmp/lottery/results.csv 2>&1 | tee -a "$OUT/lottery.txt"
grep -h "CUDA graph" /tmp/lottery/run.log 2>&1 | tee -a "$OUT/lottery.txt"

echo "== 5. stacked Conv-2 (random CIFAR-shaped data) network-steps/s"
timeout 40 python3 -m benchmarks.stacked --device cuda --model Conv-2 --sizes 1,4,8 --reps 1 --steps 200 --warmup 20 \
    2>&1 | grep -v Warning | tee "$OUT/conv2.txt"

echo "== 6. 5 seed trials of a 2,000-iteration LeNet lottery on MNIST: one stack per level (hydra/launcher=lth_seeds) vs one after another"
timeout 120 python3 -m benchmarks.stacked --device cuda --only-seeds --seeds 5 --reps 1 --seed-overrides \
    "model=lenet300_100,controls=[reinit],prune.rounds=1,train.iterations=2000,eval_every=100,checkpoint_every=1000,logger=none" \
    2>&1 | grep -v Warning | tail -3 | tee "$OUT/seeds.txt"
