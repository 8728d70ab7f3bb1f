"""Sizing a run to a wall-clock budget.

A short probe on a throwaway copy of the model times the training step and the evaluation
on this machine; the number of epochs that fits is chosen *before* the run starts, and the
card records it, so ``--epochs N`` alone reproduces the run.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch

from ..data import ImageSplit
from .config import TrainConfig
from .trainer import Trainer, evaluate_top1, sync


def epochs_that_fit(budget_s: float, probe_s: float, final_eval_s: float, epoch_s: float,
                    max_epochs: int) -> int:
    """Whole epochs left in the budget after the probe and the final evaluation (at least 1)."""
    # 5% of the budget is kept back for what the probe cannot see (saving, a slower epoch)
    left = budget_s * 0.95 - probe_s - final_eval_s
    return int(max(1, min(max_epochs, left // epoch_s)))


def plan_epochs(cfg: TrainConfig, budget_s: float, train_split: ImageSplit, test_split: ImageSplit,
                warmup_steps: int = 5, timed_steps: int = 20) -> dict[str, Any]:
    """How many epochs of ``cfg`` fit in ``budget_s`` seconds, measured on this machine.

    Trains a throwaway copy for a few steps (the first ``warmup_steps`` untimed: cuDNN
    autotuning, worker start-up), times an evaluation pass, and keeps a reserve for the
    final fp32 CPU evaluation. The run itself is built afterwards from a fresh seed.
    """
    t0 = time.time()
    probe = Trainer(cfg, cfg.epochs, train_split)
    batches = probe.batches(epoch=10**6)  # a stream of its own, unused by the run
    n = min(warmup_steps + timed_steps, probe.steps_per_epoch)
    warmup_steps = min(warmup_steps, max(0, n - 1))
    t_first = time.time()
    first = next(batches)  # an epoch's fixed cost: starting the loader's workers
    startup_s = time.time() - t_first
    step_times = []
    for i in range(n):
        sync(cfg.device)
        t_step = time.time()
        probe.step(*(first if i == 0 else next(batches)))
        sync(cfg.device)
        if i >= warmup_steps:
            step_times.append(time.time() - t_step)
    # the median, not the mean: one step slowed by a late recompilation or a busy core
    # would otherwise stretch every planned epoch and shorten the run
    step_s = statistics.median(step_times)
    # one untimed batch first: cuDNN autotunes each new batch shape, once
    evaluate_top1(probe.model, test_split, cfg.device, probe.bf16, n=500)
    sync(cfg.device)
    t_eval = time.time()
    n_eval = min(2000, len(test_split))
    evaluate_top1(probe.model, test_split, cfg.device, probe.bf16, n=n_eval)
    sync(cfg.device)
    eval_s = (time.time() - t_eval) * len(test_split) / n_eval
    cpu_model = copy.deepcopy(probe.model).float().cpu().to(memory_format=torch.contiguous_format)
    t_cpu = time.time()
    n_cpu = min(500, len(test_split))
    evaluate_top1(cpu_model, test_split, "cpu", False, n=n_cpu)
    final_eval_s = (time.time() - t_cpu) * len(test_split) / n_cpu
    del probe, cpu_model
    epoch_s = step_s * (len(train_split) // cfg.batch_size if not cfg.max_steps else
                        min(cfg.max_steps, len(train_split) // cfg.batch_size)) + startup_s + eval_s / cfg.eval_every
    probe_s = time.time() - t0
    epochs = epochs_that_fit(budget_s, probe_s, final_eval_s, epoch_s, cfg.epochs)
    return {"epochs": epochs, "step_seconds": step_s, "epoch_seconds": epoch_s, "loader_start_seconds": startup_s,
            "final_eval_seconds": final_eval_s, "probe_seconds": probe_s, "budget_seconds": budget_s}
