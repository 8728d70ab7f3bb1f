"""Training: the ViT and CNN pipelines, epoch planning by time budget, resume, checkpoint storage.

Runs on a tiny CIFAR-shaped ImageFolder (a few PNGs per class), so every case trains for
real in seconds; the full-length runs are the shipped checkpoints themselves.
"""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vitquant_core import models as M
from vitquant_core.training.train import TrainConfig, epochs_that_fit, history_before, parse_args, plan_epochs, train


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_cifar")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("test", 4)):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                # class-dependent mean colour, so a few steps can learn something
                img = rng.integers(0, 60, (32, 32, 3)) + 19 * c
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
    return root


def test_train_cnn_writes_card_and_resumes_identically(tiny_cifar, tmp_path):
    cfg = dict(model="resnet20_cifar", epochs=2, batch_size=16, data_root=str(tiny_cifar), seed=3)
    full = train(TrainConfig(**cfg, out=str(tmp_path / "a.safetensors")))
    assert full["epochs"] == 2 and full["builder_kwargs"] == {}
    assert 0.0 <= full["test_top1"] <= 100.0
    log = (tmp_path / "a.train.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in log] == [1, 2]
    # the time spent waiting for batches is part of the epoch, and not nothing (crop + flip run there)
    assert all(0.0 < json.loads(r)["data_wait_seconds"] < json.loads(r)["seconds"] for r in log)

    # a resume state left by a run of another length is refused, not silently mixed in
    part = tmp_path / "b.safetensors"
    torch.save({"model": {}, "opt": {}, "sched": {}, "epoch": 1, "epochs": 99, "history": "[]"},
               part.with_suffix(".resume.pt"))
    with pytest.raises(ValueError, match="resume with the same --epochs"):
        train(TrainConfig(**cfg, out=str(part)))


def test_resume_matches_uninterrupted_run(tiny_cifar, tmp_path, monkeypatch):
    import vitquant_core.training.train as T

    cfg = dict(model="resnet20_cifar", epochs=3, batch_size=16, data_root=str(tiny_cifar), seed=1)
    ref = train(TrainConfig(**cfg, out=str(tmp_path / "ref.safetensors")))

    # interrupt the same run after epoch 2 (as a crash would), then resume it
    real_test = T._test_top1
    calls = {"n": 0}

    def crash_after_two(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_test(*a, **k)

    monkeypatch.setattr(T, "_test_top1", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg, out=str(tmp_path / "res.safetensors")))
    monkeypatch.setattr(T, "_test_top1", real_test)
    assert (tmp_path / "res.resume.pt").exists()
    resumed = train(TrainConfig(**cfg, out=str(tmp_path / "res.safetensors")))
    assert not (tmp_path / "res.resume.pt").exists()
    a = M.create_model("resnet20_cifar", checkpoint=tmp_path / "ref.safetensors").state_dict()
    b = M.create_model("resnet20_cifar", checkpoint=tmp_path / "res.safetensors").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert resumed["test_top1"] == ref["test_top1"]


def test_a_run_killed_while_saving_keeps_its_last_resume_state(tiny_cifar, tmp_path, monkeypatch):
    import vitquant_core.training.train as T

    out = tmp_path / "k.safetensors"
    real_save = torch.save
    calls = {"n": 0}

    def killed_mid_write(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's state: half written, then the process dies
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half a file")
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(T.torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(model="resnet20_cifar", epochs=3, batch_size=16, data_root=str(tiny_cifar), out=str(out)))
    monkeypatch.setattr(T.torch, "save", real_save)
    state = torch.load(out.with_suffix(".resume.pt"), weights_only=True)
    assert state["epoch"] == 1  # the first epoch's state, intact
    assert not list(tmp_path.glob("*.tmp"))
    card = train(TrainConfig(model="resnet20_cifar", epochs=3, batch_size=16, data_root=str(tiny_cifar), out=str(out)))
    assert card["epochs"] == 3 and [json.loads(r)["epoch"] for r in
                                    out.with_suffix(".train.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_time_budget_probe_is_not_thrown_by_one_stalled_step(tiny_cifar, monkeypatch):
    """A single step stalled (a late recompilation, a busy core) must not stretch every planned epoch."""
    import time

    import vitquant_core.training.train as T
    from vitquant_core.data import load_cifar10

    real_step, calls, stall_s = T._Trainer.step, [], 4.0

    def step(self, xb, y):
        calls.append(1)
        if len(calls) == 10:  # one of the 20 timed steps (after 5 untimed warm-up steps)
            time.sleep(stall_s)
        return real_step(self, xb, y)

    monkeypatch.setattr(T._Trainer, "step", step)
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
    from vitquant_core.data import load_cifar10

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


def test_a_run_stopped_early_is_repeated_by_its_card(tiny_cifar, tmp_path):
    """stop_after runs the first epochs of a longer schedule, as a time budget's safety net does."""
    cfg = dict(model="resnet20_cifar", epochs=3, batch_size=16, data_root=str(tiny_cifar), seed=2)
    full = train(TrainConfig(**cfg, out=str(tmp_path / "full.safetensors")))
    cut = train(TrainConfig(**cfg, stop_after=2, out=str(tmp_path / "cut.safetensors")))
    assert (cut["epochs"], cut["epochs_planned"], cut["epochs_in_total"]) == (2, 3, 2)
    assert cut["stopped_early"] == "stopped after epoch 2 of 3 planned, as stop_after asked"
    assert (full["epochs"], full["epochs_planned"], full["stopped_early"]) == (3, 3, None)
    log = {n: [json.loads(r) for r in (tmp_path / f"{n}.train.jsonl").read_text().splitlines()]
           for n in ("full", "cut")}
    # the same two epochs as the full run's first two: the 3-epoch schedule, not a 2-epoch one
    assert [r["lr"] for r in log["cut"]] == [r["lr"] for r in log["full"][:2]]
    assert [r["train_loss"] for r in log["cut"]] == [r["train_loss"] for r in log["full"][:2]]
    assert "test_top1" in log["cut"][-1]  # the last epoch run is evaluated
    again = TrainConfig.from_card(cut)
    assert (again.epochs, again.stop_after) == (3, 2)
    assert TrainConfig.from_card(full).stop_after is None
    # a card from before epochs_planned, stopped by its time budget, repeats the same way
    legacy = {k: v for k, v in cut.items() if k != "epochs_planned"} | {
        "stopped_early": "stopped by the time budget after epoch 2 of 3 planned", "time_budget_plan": {"epochs": 3}}
    assert (TrainConfig.from_card(legacy).epochs, TrainConfig.from_card(legacy).stop_after) == (3, 2)
    # another length asked for: that length's whole schedule
    assert (TrainConfig.from_card(cut, epochs=5).epochs, TrainConfig.from_card(cut, epochs=5).stop_after) == (5, None)
    with pytest.raises(ValueError, match="stop_after must be between 1 and epochs"):
        TrainConfig(**cfg, stop_after=4)


def test_vit_distilled_float16_storage_round_trip(tiny_cifar, tmp_path, monkeypatch):
    teacher = tmp_path / "teacher.safetensors"
    train(TrainConfig(model="resnet20_cifar", epochs=1, batch_size=16, data_root=str(tiny_cifar), out=str(teacher)))
    out = tmp_path / "deit.safetensors"
    card = train(TrainConfig(model="deit_tiny_cifar", epochs=1, batch_size=16, max_steps=2, data_root=str(tiny_cifar),
                             teacher="resnet20_cifar", teacher_checkpoint=str(teacher), workers=2,
                             vit_augment="per-image", store_dtype="float16", out=str(out)))
    assert card["builder_kwargs"] == {"distilled": True}
    # the teacher is recorded by hash, as the file it was read from
    teacher_card = M.read_card(teacher)
    assert card["teacher"] == {"model": "resnet20_cifar", "file": "teacher.safetensors",
                               "sha256": teacher_card["sha256"], "test_top1": teacher_card["test_top1"]}
    assert "torchvision, per image" in card["recipe"]["augmentation"]
    assert card["weights_stored_as"].startswith("float16")
    from safetensors.torch import load_file

    state = load_file(str(out))
    assert state["blocks.0.attn.qkv.weight"].dtype == torch.float16
    assert state["blocks.0.norm1.weight"].dtype == torch.float32 and "dist_token" in state
    # the registry rebuilds the distilled architecture from the card, and the card's figure is the file's
    model, info = M.load_model("deit_tiny_cifar", out)
    assert model.blocks[0].attn.qkv.weight.dtype == torch.float32
    from vitquant_core.data import load_cifar10
    from vitquant_core.training.train import _test_top1

    assert _test_top1(model, load_cifar10("test", tiny_cifar), "cpu", False) == card["test_top1"]
    half = out.stat().st_size
    full = M.save_checkpoint(model, tmp_path / "full.safetensors", {})["size_bytes"]
    assert half < 0.6 * full


def test_vit_batched_augmentation_is_the_default_and_seeded(tiny_cifar, tmp_path):
    from vitquant_core.training.augment import random_crop_flip, trivial_augment_wide
    from vitquant_core.data import load_cifar10
    from vitquant_core.training.train import _Trainer, _epoch_generator

    cfg = TrainConfig(model="deit_tiny_cifar", epochs=1, batch_size=16, max_steps=2, data_root=str(tiny_cifar))
    assert cfg.vit_augment == "batched"
    split = load_cifar10("train", tiny_cifar)
    tr = _Trainer(cfg, 1, split)
    x, y = next(tr.batches(0))
    # the batch is the seeded crop/flip then TrivialAugment of the epoch's first indices
    g = _epoch_generator(cfg.seed, 0)
    idx = torch.randperm(len(split), generator=g)[:16]
    expected = trivial_augment_wide(random_crop_flip(split.images[idx], g), g)
    assert torch.equal(x, expected) and torch.equal(y, split.labels[idx])
    card = train(TrainConfig(**(vars(cfg) | {"out": str(tmp_path / "d.safetensors")})))
    assert "batched, one draw per image" in card["recipe"]["augmentation"]
    assert card["recipe"]["vit_augment"] == "batched"
    assert TrainConfig.from_card(card).vit_augment == "batched"
    # a card written before the batched pipeline existed is reproduced with torchvision's
    legacy = card | {"recipe": {k: v for k, v in card["recipe"].items() if k != "vit_augment"}
                     | {"augmentation": "random crop (pad 4) + flip + TrivialAugmentWide + mixup/cutmix"}}
    assert TrainConfig.from_card(legacy).vit_augment == "per-image"


def test_cnn_trivial_augment_is_opt_in_seeded_and_repeated_by_its_card(tiny_cifar, tmp_path):
    from vitquant_core.training.augment import random_crop_flip, trivial_augment_wide
    from vitquant_core.data import load_cifar10
    from vitquant_core.training.train import _Trainer, _epoch_generator

    split = load_cifar10("train", tiny_cifar)
    g = _epoch_generator(0, 0)
    idx = torch.randperm(len(split), generator=g)[:16]
    cropped = random_crop_flip(split.images[idx], g)
    plain = TrainConfig(model="resnet20_cifar", epochs=1, batch_size=16, max_steps=1, data_root=str(tiny_cifar))
    x, _ = next(_Trainer(plain, 1, split).batches(0))
    assert torch.equal(x, cropped)  # the CNN recipe: crop and flip only
    cfg = dataclasses.replace(plain, trivial_augment=True, out=str(tmp_path / "ta.safetensors"))
    x, _ = next(_Trainer(cfg, 1, split).batches(0))
    assert torch.equal(x, trivial_augment_wide(cropped, g)) and not torch.equal(x, cropped)
    card = train(cfg)
    assert card["recipe"]["augmentation"] == "random crop (pad 4) + flip + TrivialAugmentWide (batched, one draw per image)"
    assert TrainConfig.from_card(card).trivial_augment is True
    # cards from before the option: each family's own recipe
    legacy = card | {"recipe": {k: v for k, v in card["recipe"].items() if k != "trivial_augment"}}
    assert _Trainer(TrainConfig.from_card(legacy), 1, split).trivial_augment is False
    # a ViT can turn it off (per-image workers then apply crop and flip only)
    vit = TrainConfig(model="deit_tiny_cifar", epochs=1, batch_size=16, max_steps=1, data_root=str(tiny_cifar),
                      trivial_augment=False, vit_augment="per-image", mixup=0.0, cutmix=0.0,
                      out=str(tmp_path / "vit.safetensors"))
    assert train(vit)["recipe"]["augmentation"] == "random crop (pad 4) + flip"


def test_vit_without_mixing_trains_on_hard_labels_and_its_card_says_so(tiny_cifar, tmp_path):
    from vitquant_core.training.train import _Trainer, _mixing
    from vitquant_core.data import load_cifar10

    cfg = TrainConfig(model="deit_tiny_cifar", epochs=1, batch_size=16, max_steps=2, data_root=str(tiny_cifar),
                      mixup=0.0, cutmix=0.0, out=str(tmp_path / "plain.safetensors"))
    assert _Trainer(cfg, 1, load_cifar10("train", tiny_cifar)).mixup_fn is None  # timm's Mixup refuses 0/0
    card = train(cfg)
    assert card["recipe"]["augmentation"].endswith("one draw per image)")
    assert "mix" not in card["recipe"]["augmentation"]
    assert _mixing(TrainConfig(model="deit_tiny_cifar", mixup=0.0)) == " + cutmix"
    assert _mixing(TrainConfig(model="deit_tiny_cifar")) == " + mixup/cutmix"


def test_from_card_warns_when_the_default_teacher_is_not_the_one_distilled_from():
    shipped = M.read_card(M.get_entry("resnet18_cifar").default_checkpoint)
    recipe = {"model": "deit_tiny_cifar", "teacher": "resnet18_cifar", "teacher_checkpoint": None}
    same = {"file": "deit.safetensors", "epochs": 1, "recipe": recipe,
            "teacher": {"model": "resnet18_cifar", "file": "resnet18_cifar.safetensors",
                        "sha256": shipped["sha256"], "test_top1": shipped["test_top1"]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TrainConfig.from_card(same).teacher == "resnet18_cifar"
        # cards written before teachers were recorded, and runs without a teacher, say nothing
        TrainConfig.from_card({k: v for k, v in same.items() if k != "teacher"})
    other = same | {"teacher": same["teacher"] | {"sha256": "0" * 64, "test_top1": 80.0}}
    with pytest.warns(UserWarning, match=r"distilled from resnet18_cifar.safetensors \(80.0 %.*teacher_checkpoint"):
        cfg = TrainConfig.from_card(other)
    assert cfg.teacher_checkpoint is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit teacher checkpoint is the user's choice
        TrainConfig.from_card(other, teacher_checkpoint="runs/old_teacher.safetensors")


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="vit_augment"):
        TrainConfig(vit_augment="gpu")
    with pytest.raises(ValueError, match="registered CIFAR model"):
        TrainConfig(model="resnet1000")
    with pytest.raises(ValueError, match="store_dtype"):
        TrainConfig(store_dtype="int8")
    with pytest.raises(ValueError, match="time_budget"):
        TrainConfig(time_budget=0)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every=0)
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)


def test_command_line_gives_each_option_its_type_and_refuses_bad_values(capsys):
    assert parse_args([]) == TrainConfig()
    cfg = parse_args(["--model", "deit_tiny_cifar", "--lr", "5e-2", "--bf16", "auto", "--compile", "yes",
                      "--max-steps", "3", "--time-budget", "60", "--teacher", "resnet18_cifar"])
    assert (cfg.model, cfg.lr, cfg.bf16, cfg.compile, cfg.max_steps, cfg.time_budget, cfg.teacher) == (
        "deit_tiny_cifar", 0.05, None, True, 3, 60.0, "resnet18_cifar")
    assert type(cfg.lr) is float and type(cfg.max_steps) is int and type(cfg.time_budget) is float
    assert parse_args(["--bf16", "False", "--compile", "0"]).bf16 is False
    for argv, message in [(["--compile", "maybe"], "'maybe' is not true or false"),
                          (["--bf16", "sometimes"], "'sometimes' is not true or false"),
                          (["--epochs", "ten"], "invalid int value: 'ten'"),
                          (["--eval-every", "0"], "eval_every must be >= 1"),
                          (["--init-from", "nowhere.safetensors"], "no checkpoint at nowhere.safetensors")]:
        with pytest.raises(SystemExit) as exit_:
            parse_args(argv)
        assert exit_.value.code == 2  # argparse's usage error, not a traceback
        assert message in capsys.readouterr().err


def test_command_line_help_describes_every_option(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # one line per option, so each help text appears whole
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        if f.name != "extra":
            assert f"--{f.name.replace('_', '-')}" in out and f.metadata["help"] in out
    assert "(default: 128)" in out and "(default: resnet20_cifar)" in out


def test_warm_restart_starts_from_the_given_checkpoint_and_records_it(tiny_cifar, tmp_path):
    cfg = dict(model="resnet20_cifar", epochs=1, batch_size=16, data_root=str(tiny_cifar), seed=2)
    a = train(TrainConfig(**cfg, out=str(tmp_path / "a.safetensors")))
    # a vanishing learning rate leaves the weights where they started: the run began from a's
    b = train(TrainConfig(**cfg, lr=1e-12, weight_decay=0.0, init_from=str(tmp_path / "a.safetensors"),
                          out=str(tmp_path / "b.safetensors")))
    wa = M.load_model("resnet20_cifar", tmp_path / "a.safetensors")[0].state_dict()
    wb = M.load_model("resnet20_cifar", tmp_path / "b.safetensors")[0].state_dict()
    convs = [k for k, v in wa.items() if v.ndim == 4]
    assert convs and all(torch.allclose(wa[k], wb[k], atol=1e-9) for k in convs)
    # whereas the same run from a fresh initialisation starts elsewhere
    fresh = train(TrainConfig(**cfg, lr=1e-12, weight_decay=0.0, out=str(tmp_path / "f.safetensors")))
    wf = M.load_model("resnet20_cifar", tmp_path / "f.safetensors")[0].state_dict()
    assert not torch.allclose(wa[convs[0]], wf[convs[0]], atol=1e-3)
    assert fresh["initialised_from"] is None and fresh["epochs_in_total"] == 1

    assert b["initialised_from"] == {"file": "a.safetensors", "sha256": a["sha256"], "epochs": 1,
                                     "test_top1": a["test_top1"]}
    assert b["epochs"] == 1 and b["epochs_in_total"] == 2
    assert TrainConfig.from_card(b).init_from == str(tmp_path / "a.safetensors")
    # without its starting checkpoint, the card says what it started from and what to do
    moved = b | {"recipe": b["recipe"] | {"init_from": str(tmp_path / "gone" / "a.safetensors")}}
    with pytest.raises(FileNotFoundError, match=f"started from a.safetensors \\(1 epochs.*SHA-256 {a['sha256']}.*"
                                                 "init_from=None \\(with epochs=2\\)"):
        TrainConfig.from_card(moved)
    assert TrainConfig.from_card(moved, init_from=None, epochs=2).init_from is None
    # nor does it start from other weights shipped under the path it recorded
    replaced = b | {"recipe": b["recipe"] | {"init_from": str(tmp_path / "f.safetensors")}}
    with pytest.raises(ValueError, match=f"warm restart from a.safetensors.*{fresh['sha256']}.*init_from=None"):
        TrainConfig.from_card(replaced)
    with pytest.raises(ValueError, match="now holds SHA-256"):
        TrainConfig.from_card(b, init_from=str(tmp_path / "f.safetensors"))  # named by hand, too
    assert TrainConfig.from_card(replaced, init_from=str(tmp_path / "a.safetensors")).init_from.endswith("a.safetensors")
    # a chain of restarts counts every epoch behind the weights
    c = train(TrainConfig(**cfg, init_from=str(tmp_path / "b.safetensors"), out=str(tmp_path / "c.safetensors")))
    assert c["initialised_from"]["epochs"] == 2 and c["epochs_in_total"] == 3
    # each restart ships the whole log behind its starting weights beside its own, each row
    # tagged with its run and that run's augmentation, epochs counted from the first run's start;
    # a fresh run has none
    log = lambda name: [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]  # noqa: E731
    aug = a["recipe"]["augmentation"]
    a_rows = [row | {"run": 0, "augmentation": aug} for row in log("a.train.jsonl")]
    b_rows = [row | {"epoch": row["epoch"] + 1, "run": 1, "augmentation": aug} for row in log("b.train.jsonl")]
    assert [row["epoch"] for row in a_rows + b_rows] == [1, 2]
    assert log("b.init.train.jsonl") == a_rows and log("c.init.train.jsonl") == a_rows + b_rows
    assert history_before(tmp_path / "c.safetensors")[-1] == log("c.train.jsonl")[-1] | {
        "epoch": 3, "run": 2, "augmentation": aug}
    assert not (tmp_path / "f.init.train.jsonl").exists() and history_before(tmp_path / "nothing.safetensors") == []
    # a restart written over the checkpoint it started from keeps that run's log, not its own
    train(TrainConfig(**cfg, init_from=str(tmp_path / "a.safetensors"), out=str(tmp_path / "a.safetensors")))
    assert log("a.init.train.jsonl") == a_rows and a_rows[0]["train_loss"] != log("a.train.jsonl")[0]["train_loss"]
    # and a fresh run written there leaves no stale one behind
    train(TrainConfig(**cfg, out=str(tmp_path / "a.safetensors")))
    assert not (tmp_path / "a.init.train.jsonl").exists()


def test_history_tags_a_vits_drop_path_so_a_plot_can_mark_where_it_changed(tmp_path):
    # stochastic depth acts on training batches only, so turning it off at a restart moves the
    # training-batch curve by itself; a CNN's card carries the field but never uses it
    def run(name, model, drop_path, epochs, init=None):
        recipe = {"augmentation": "random crop (pad 4) + flip", "drop_path": drop_path}
        card = {"model": model, "recipe": recipe, "epochs": epochs, "initialised_from": init}
        if init:
            card["epochs_in_total"] = epochs + init["epochs"]
        (tmp_path / f"{name}.json").write_text(json.dumps(card))
        rows = [{"epoch": e + 1, "train_top1": 50.0 + e} for e in range(epochs)]
        (tmp_path / f"{name}.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    run("v0", "deit_tiny_cifar", 0.1, 2)
    first = history_before(tmp_path / "v0.safetensors")
    assert [(r["run"], r["epoch"], r["drop_path"]) for r in first] == [(0, 1, 0.1), (0, 2, 0.1)]
    # a restart's .init.train.jsonl is what history_before gave for its starting checkpoint
    (tmp_path / "v1.init.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
    run("v1", "deit_tiny_cifar", 0.0, 1, init={"file": "v0.safetensors", "epochs": 2})
    assert [(r["run"], r["epoch"], r["drop_path"]) for r in history_before(tmp_path / "v1.safetensors")] == [
        (0, 1, 0.1), (0, 2, 0.1), (1, 3, 0.0)]
    run("c0", "resnet20_cifar", 0.1, 1)
    assert [set(r) for r in history_before(tmp_path / "c0.safetensors")] == [
        {"epoch", "train_top1", "run", "augmentation"}]


def test_warm_restart_refuses_a_missing_altered_or_foreign_checkpoint(tiny_cifar, tmp_path):
    cfg = dict(model="resnet20_cifar", epochs=1, batch_size=16, data_root=str(tiny_cifar))
    with pytest.raises(FileNotFoundError, match="init_from"):
        TrainConfig(**cfg, init_from=str(tmp_path / "nothing.safetensors"))
    train(TrainConfig(**cfg, max_steps=1, out=str(tmp_path / "a.safetensors")))
    # a checkpoint of another model is named as such, not loaded half-way
    with pytest.raises(ValueError, match="not 'resnet18_cifar'"):
        train(TrainConfig(**(cfg | {"model": "resnet18_cifar"}), init_from=str(tmp_path / "a.safetensors"),
                          out=str(tmp_path / "b.safetensors")))
    # weights that no longer match their card's SHA-256 are refused
    raw = bytearray((tmp_path / "a.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "a.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256|sha256"):
        train(TrainConfig(**cfg, init_from=str(tmp_path / "a.safetensors"), out=str(tmp_path / "c.safetensors")))
    assert not (tmp_path / "b.safetensors").exists() and not (tmp_path / "c.safetensors").exists()
