"""Sizing a run to a time budget: the timing probe and the epochs that fit."""
from __future__ import annotations

import time

from vitquant_core.data import load_cifar10
from vitquant_core.training.budget import epochs_that_fit, plan_epochs
from vitquant_core.training.config import TrainConfig
from vitquant_core.training.train import train
from vitquant_core.training.trainer import Trainer


def test_time_budget_probe_is_not_thrown_by_one_stalled_step(tiny_cifar, monkeypatch):
    """A single step stalled (a late recompilation, a busy core) must not stretch every planned epoch."""
    real_step, calls, stall_s = Trainer.step, [], 4.0

    def step(self, xb, y):
        calls.append(1)
        if len(calls) == 10:  # one of the 20 timed steps (after 5 untimed warm-up steps)
            time.sleep(stall_s)
        return real_step(self, xb, y)

    monkeypatch.setattr(Trainer, "step", step)
    tr, te = load_cifar10("train", tiny_cifar), load_cifar10("test", tiny_cifar)
    cfg = TrainConfig(model="resnet20_cifar", epochs=50, batch_size=2, data_root=str(tiny_cifar))
    plan = plan_epochs(cfg, 1e6, tr, te)
    assert len(calls) == 25  # 40 steps to an epoch: 5 warm-up + 20 timed
    # a mean over the 20 timed steps would be at least stall_s / 20 = 0.2 s
    assert plan["step_seconds"] < stall_s / 20


def test_epochs_that_fit():
    # 100 s: 95 usable, minus 10 s probe and 5 s final evaluation = 80 s, 7 s epochs -> 11
    assert epochs_that_fit(100, 10, 5, 7, max_epochs=50) == 11
    assert epochs_that_fit(100, 10, 5, 7, max_epochs=8) == 8  # the cap
    assert epochs_that_fit(10, 10, 5, 7, max_epochs=50) == 1  # never zero


def test_time_budget_plans_epochs_before_the_run(tiny_cifar, tmp_path):
    cfg = TrainConfig(model="resnet20_cifar", epochs=50, batch_size=16, data_root=str(tiny_cifar))

    tr, te = load_cifar10("train", tiny_cifar), load_cifar10("test", tiny_cifar)
    plan = plan_epochs(cfg, 1e6, tr, te)
    assert plan["epochs"] == 50  # a huge budget: the cap
    # the measured parts (timings, so only their signs and relations are checked)
    assert plan["step_seconds"] > 0 and plan["final_eval_seconds"] > 0
    assert plan["epoch_seconds"] >= plan["step_seconds"] * (len(tr) // 16)
    assert plan_epochs(cfg, 1e-3, tr, te)["epochs"] == 1  # never zero

    card = train(TrainConfig(model="resnet20_cifar", epochs=3, batch_size=16, data_root=str(tiny_cifar),
                             time_budget=1e6, out=str(tmp_path / "tb.safetensors")))
    assert card["epochs"] == 3 and card["time_budget_plan"]["epochs"] == 3
    again = TrainConfig.from_card(card)
    assert again.epochs == 3 and again.time_budget is None and again.batch_size == 16
