"""Training: the ViT and CNN pipelines, resume, warm restarts, checkpoint storage.

Runs on a tiny CIFAR-shaped ImageFolder (the ``tiny_cifar`` fixture), so every case trains
for real in seconds; the full-length runs are the shipped checkpoints themselves.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vitquant_core import models as M
from vitquant_core.data import load_cifar10
from vitquant_core.training.augment import random_crop_flip, trivial_augment_wide
from vitquant_core.training.config import TrainConfig
from vitquant_core.training.history import history_before
from vitquant_core.training.train import _mixing, train
from vitquant_core.training.trainer import Trainer, epoch_generator, evaluate_top1


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
    real_test = T.evaluate_top1
    calls = {"n": 0}

    def crash_after_two(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_test(*a, **k)

    monkeypatch.setattr(T, "evaluate_top1", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg, out=str(tmp_path / "res.safetensors")))
    monkeypatch.setattr(T, "evaluate_top1", real_test)
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

    assert evaluate_top1(model, load_cifar10("test", tiny_cifar), "cpu", False) == card["test_top1"]
    half = out.stat().st_size
    full = M.save_checkpoint(model, tmp_path / "full.safetensors", {})["size_bytes"]
    assert half < 0.6 * full


def test_vit_batched_augmentation_is_the_default_and_seeded(tiny_cifar, tmp_path):

    cfg = TrainConfig(model="deit_tiny_cifar", epochs=1, batch_size=16, max_steps=2, data_root=str(tiny_cifar))
    assert cfg.vit_augment == "batched"
    split = load_cifar10("train", tiny_cifar)
    tr = Trainer(cfg, 1, split)
    x, y = next(tr.batches(0))
    # the batch is the seeded crop/flip then TrivialAugment of the epoch's first indices
    g = epoch_generator(cfg.seed, 0)
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

    split = load_cifar10("train", tiny_cifar)
    g = epoch_generator(0, 0)
    idx = torch.randperm(len(split), generator=g)[:16]
    cropped = random_crop_flip(split.images[idx], g)
    plain = TrainConfig(model="resnet20_cifar", epochs=1, batch_size=16, max_steps=1, data_root=str(tiny_cifar))
    x, _ = next(Trainer(plain, 1, split).batches(0))
    assert torch.equal(x, cropped)  # the CNN recipe: crop and flip only
    cfg = dataclasses.replace(plain, trivial_augment=True, out=str(tmp_path / "ta.safetensors"))
    x, _ = next(Trainer(cfg, 1, split).batches(0))
    assert torch.equal(x, trivial_augment_wide(cropped, g)) and not torch.equal(x, cropped)
    card = train(cfg)
    assert card["recipe"]["augmentation"] == (
        "random crop (pad 4) + flip + TrivialAugmentWide (batched, one draw per image)")
    assert TrainConfig.from_card(card).trivial_augment is True
    # cards from before the option: each family's own recipe
    legacy = card | {"recipe": {k: v for k, v in card["recipe"].items() if k != "trivial_augment"}}
    assert Trainer(TrainConfig.from_card(legacy), 1, split).trivial_augment is False
    # a ViT can turn it off (per-image workers then apply crop and flip only)
    vit = TrainConfig(model="deit_tiny_cifar", epochs=1, batch_size=16, max_steps=1, data_root=str(tiny_cifar),
                      trivial_augment=False, vit_augment="per-image", mixup=0.0, cutmix=0.0,
                      out=str(tmp_path / "vit.safetensors"))
    assert train(vit)["recipe"]["augmentation"] == "random crop (pad 4) + flip"


def test_vit_without_mixing_trains_on_hard_labels_and_its_card_says_so(tiny_cifar, tmp_path):

    cfg = TrainConfig(model="deit_tiny_cifar", epochs=1, batch_size=16, max_steps=2, data_root=str(tiny_cifar),
                      mixup=0.0, cutmix=0.0, out=str(tmp_path / "plain.safetensors"))
    assert Trainer(cfg, 1, load_cifar10("train", tiny_cifar)).mixup_fn is None  # timm's Mixup refuses 0/0
    card = train(cfg)
    assert card["recipe"]["augmentation"].endswith("one draw per image)")
    assert "mix" not in card["recipe"]["augmentation"]
    assert _mixing(TrainConfig(model="deit_tiny_cifar", mixup=0.0)) == " + cutmix"
    assert _mixing(TrainConfig(model="deit_tiny_cifar")) == " + mixup/cutmix"


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
    again = TrainConfig.from_card(replaced, init_from=str(tmp_path / "a.safetensors"))
    assert again.init_from.endswith("a.safetensors")
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
