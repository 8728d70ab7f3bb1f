#!/usr/bin/env bash
# Train the three reference models full-length on one GPU, in a fixed wall-clock budget:
# ResNet-20 and ResNet-18 side by side, then DeiT-Tiny distilled from the new ResNet-18
# (DeiT's hard distillation through its distillation token). Each run sizes its epochs to
# its budget with a timing probe before it starts, and its card records the epochs, so
# `python -m vitquant_core.train --model NAME --epochs N ...` with the card's recipe (or
# notebook 00's `retrain`) reproduces it on any device.
#
#   scripts/train_reference_models.sh [DEVICE] [CNN_SECONDS] [VIT_SECONDS]
#
# Defaults: cuda, 190 s for the two ResNets (together), 280 s for DeiT-Tiny; TRAIN_ARGS
# adds options to every run (e.g. "--max-steps 3" for a smoke run). Logs go to
# runs/, checkpoints and cards to checkpoints/. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda}
CNN_S=${2:-190}
VIT_S=${3:-280}
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-$(( $(nproc) > 4 ? $(nproc) - 2 : 0 ))}
mkdir -p runs

# decode both splits once, before the runs share the cache
"$PY" -c "from vitquant_core.data import load_cifar10; load_cifar10('train'); load_cifar10('test')"

"$PY" -m vitquant_core.train --model resnet18_cifar --device "$DEVICE" --epochs 40 --batch-size 512 \
    --time-budget "$CNN_S" --store-dtype float16 --eval-every 1 ${TRAIN_ARGS:-} > runs/resnet18_cifar.log 2>&1 &
R18=$!
"$PY" -m vitquant_core.train --model resnet20_cifar --device "$DEVICE" --epochs 80 --batch-size 128 \
    --time-budget "$CNN_S" --eval-every 1 ${TRAIN_ARGS:-} > runs/resnet20_cifar.log 2>&1 &
R20=$!
status=0
wait $R18 || { echo "resnet18_cifar failed: see runs/resnet18_cifar.log" >&2; status=1; }
wait $R20 || { echo "resnet20_cifar failed: see runs/resnet20_cifar.log" >&2; status=1; }
tail -n 2 runs/resnet18_cifar.log runs/resnet20_cifar.log

# DeiT's teacher is the ResNet-18 just trained (or the shipped one if that run failed)
"$PY" -m vitquant_core.train --model deit_tiny_cifar --device "$DEVICE" --epochs 100 --batch-size 256 \
    --lr 1e-3 --warmup-epochs 3 --teacher resnet18_cifar --workers "$WORKERS" \
    --time-budget "$VIT_S" --eval-every 2 ${TRAIN_ARGS:-} > runs/deit_tiny_cifar.log 2>&1 \
    || { echo "deit_tiny_cifar failed: see runs/deit_tiny_cifar.log" >&2; status=1; }
tail -n 2 runs/deit_tiny_cifar.log
exit $status
