#!/usr/bin/env bash
# Train the reference models full-length on one GPU, in a fixed wall-clock budget:
# ResNet-20 and ResNet-18 side by side, then DeiT-Tiny distilled from the new ResNet-18
# (DeiT's hard distillation through its distillation token). Each run sizes its epochs to
# its budget with a timing probe before it starts, and its card records the epochs, so
# `python -m vitquant_core.training.train --model NAME --epochs N ...` with the card's recipe (or
# notebook 00's `retrain`) reproduces it on any device.
#
#   vitquant_core/training/scripts/train_reference_models.sh [DEVICE] [CNN_SECONDS] [VIT_SECONDS]
#
# Defaults: cuda, 190 s for the ResNets (side by side), 280 s for DeiT-Tiny. MODELS picks
# which to train (default: all three, e.g. MODELS="resnet18_cifar deit_tiny_cifar");
# TRAIN_ARGS adds options to every run (e.g. "--max-steps 3" for a smoke run). Logs go to
# $RUNS (default runs/), checkpoints and cards to checkpoints/. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DEVICE=${1:-cuda}
CNN_S=${2:-190}
VIT_S=${3:-280}
PY=${PYTHON:-python3}
MODELS=${MODELS:-resnet20_cifar resnet18_cifar deit_tiny_cifar}
want() { [[ " $MODELS " == *" $1 "* ]]; }
for m in $MODELS; do
  case "$m" in resnet20_cifar|resnet18_cifar|deit_tiny_cifar) ;;
    *) echo "MODELS: unknown model '$m'; choose among resnet20_cifar resnet18_cifar deit_tiny_cifar" >&2; exit 2 ;;
  esac
done
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"

# decode both splits once, before the runs share the cache
"$PY" -c "from vitquant_core.data import load_cifar10; load_cifar10('train'); load_cifar10('test')"

status=0
pids=()
if want resnet18_cifar; then
  "$PY" -m vitquant_core.training.train --model resnet18_cifar --device "$DEVICE" --epochs 100 --batch-size 512 \
      --time-budget "$CNN_S" --store-dtype float16 --eval-every 2 ${TRAIN_ARGS:-} > "$RUNS/resnet18_cifar.log" 2>&1 &
  pids+=("$!:resnet18_cifar")
fi
# ResNet-20 at batch 512 (learning rate scaled to 0.4): at 128 the tiny network is bound by
# kernel launches on a GPU (6-7 s an epoch on an H100 beside ResNet-18), so a budget buys
# few epochs; four times fewer steps per epoch buy several times more.
if want resnet20_cifar; then
  "$PY" -m vitquant_core.training.train --model resnet20_cifar --device "$DEVICE" --epochs 200 --batch-size 512 \
      --time-budget "$CNN_S" --eval-every 2 ${TRAIN_ARGS:-} > "$RUNS/resnet20_cifar.log" 2>&1 &
  pids+=("$!:resnet20_cifar")
fi
for p in "${pids[@]}"; do
  wait "${p%%:*}" || { echo "${p#*:} failed: see $RUNS/${p#*:}.log" >&2; status=1; }
  tail -n 2 "$RUNS/${p#*:}.log"
done

# DeiT's teacher is the ResNet-18 just trained (or the shipped one if that run failed).
# Its TrivialAugment runs batched on the GPU (the trainer's default), not image by image in
# DataLoader workers, so the loader does not bound the step.
if want deit_tiny_cifar; then
  "$PY" -m vitquant_core.training.train --model deit_tiny_cifar --device "$DEVICE" --epochs 300 --batch-size 256 \
      --lr 1e-3 --warmup-epochs 3 --teacher resnet18_cifar \
      --time-budget "$VIT_S" --eval-every 2 ${TRAIN_ARGS:-} > "$RUNS/deit_tiny_cifar.log" 2>&1 \
      || { echo "deit_tiny_cifar failed: see $RUNS/deit_tiny_cifar.log" >&2; status=1; }
  tail -n 2 "$RUNS/deit_tiny_cifar.log"
fi
exit $status
