import json

import pytest
import torch

from vitquant_core import models as M


@pytest.mark.parametrize("name, n_params", [("resnet20_cifar", (0.26e6, 0.30e6)),
                                            ("resnet18_cifar", (11.1e6, 11.2e6)),
                                            ("deit_tiny_cifar", (5.3e6, 5.6e6))],
                         ids=["resnet20", "resnet18", "deit_tiny"])
def test_cifar_models(name, n_params):
    m = M.create_model(name)
    n = sum(p.numel() for p in m.parameters())
    assert n_params[0] <= n <= n_params[1]
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_registry_and_pass_through():
    assert M.list_models("*cifar") == ["deit_tiny_cifar", "resnet18_cifar", "resnet20_cifar"]
    deit = M.create_model("deit_tiny_patch16_224", pretrained=False)  # timm pass-through
    assert deit.patch_embed.proj.kernel_size == (16, 16) and deit.head.out_features == 1000
    rn = M.create_model("resnet18", pretrained=False)  # timm also has resnet18
    assert rn(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(KeyError, match="unknown model"):
        M.create_model("no_such_net")
    cfg = M.data_config("deit_tiny_patch16_224")
    assert tuple(cfg["input_size"]) == (3, 224, 224) and cfg["crop_pct"] == pytest.approx(0.9)


def test_checkpoint_round_trip_and_hash(tmp_path):
    m = M.create_model("resnet20_cifar")
    card = M.save_checkpoint(m, tmp_path / "r.safetensors", {"model": "resnet20_cifar"})
    assert len(card["sha256"]) == 64
    m2 = M.create_model("resnet20_cifar", checkpoint=tmp_path / "r.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    # a changed file fails the hash check
    (tmp_path / "r.safetensors").write_bytes((tmp_path / "r.safetensors").read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="SHA-256"):
        M.create_model("resnet20_cifar", checkpoint=tmp_path / "r.safetensors")


def test_checkpoint_without_card_is_refused(tmp_path):
    m = M.create_model("resnet20_cifar")
    M.save_checkpoint(m, tmp_path / "r.safetensors", {})
    (tmp_path / "r.json").unlink()
    with pytest.raises(FileNotFoundError, match="card"):
        M.load_checkpoint(m, tmp_path / "r.safetensors")


def test_missing_default_checkpoint_says_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="vitquant_core.training.train"):
        M.load_model("deit_tiny_cifar")


@pytest.mark.parametrize("name", ["resnet20_cifar", "resnet18_cifar", "deit_tiny_cifar"])
def test_shipped_checkpoint_verifies(name):
    entry = M.get_entry(name)
    card = json.loads(entry.default_checkpoint.with_suffix(".json").read_text())
    model, info = M.load_model(name)
    assert info["checkpoint_sha256"] == card["sha256"] == M.sha256_file(entry.default_checkpoint)
    assert card["size_bytes"] == entry.default_checkpoint.stat().st_size
    assert all(p.dtype == torch.float32 for p in model.parameters())  # float16 storage is cast back
    if name == "deit_tiny_cifar":  # the card rebuilds the distillation token it was trained with
        assert card["builder_kwargs"] == {"distilled": True} and hasattr(model, "dist_token")
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)  # eval: the two heads averaged


@pytest.mark.parametrize("name", ["resnet20_cifar", "resnet18_cifar", "deit_tiny_cifar"])
def test_readme_lists_each_shipped_model_with_its_card_accuracy(name):
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    row = re.search(rf"^\| `{name}` \|.*$", readme, re.M)
    assert row, f"README's reference-model table has no row for {name}"
    card = M.read_card(M.get_entry(name).default_checkpoint)
    assert f"| {card['test_top1']:.2f} %" in row.group(0)


@pytest.mark.parametrize("name", ["resnet20_cifar", "resnet18_cifar", "deit_tiny_cifar"])
def test_shipped_log_covers_every_epoch_behind_the_weights(name):
    """Notebook 00 draws the whole curve: a warm restart ships the log behind its starting
    weights (epochs 1..N, each row tagged with its run) beside its own."""
    ckpt = M.get_entry(name).default_checkpoint
    card = M.read_card(ckpt)
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []  # noqa: E731
    own, before = read(ckpt.with_suffix(".train.jsonl")), read(ckpt.with_suffix(".init.train.jsonl"))
    assert [row["epoch"] for row in own] == list(range(1, card["epochs"] + 1))
    start = card.get("initialised_from")
    assert [row["epoch"] for row in before] == list(range(1, (start["epochs"] + 1) if start else 1))
    if start:
        runs = [row["run"] for row in before]
        assert runs == sorted(runs) and runs[0] == 0 and all("augmentation" in row for row in before)


def test_shipped_resnet20_reproduces_its_card(cifar_root):
    """A fresh fp32 evaluation on the full 10k test split gives the card's figure (the other
    two models are checked the same way by notebook 01 with n_eval 0; ~1.5 min each here)."""
    from vitquant_core.data import load_cifar10
    from vitquant_core.eval import evaluate

    model, info = M.load_model("resnet20_cifar")
    top1 = evaluate(model, load_cifar10("test").loader(batch_size=500)).top1
    assert abs(top1 - info["card"]["test_top1"]) <= 0.1


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network, or to fetch published weights, fails at once (the hub
    client would otherwise retry a refused connection for about 50 s)."""
    import socket

    import timm.models._builder
    import torchvision.models._api

    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)


@pytest.fixture
def resnet20_file(tmp_path):
    torch.manual_seed(0)
    m = M.create_model("resnet20_cifar")
    M.save_checkpoint(m, tmp_path / "r20.safetensors", {"model": "resnet20_cifar"})
    return tmp_path / "r20.safetensors"


@pytest.mark.parametrize("load", [
    lambda p: M.create_model("resnet18_cifar", checkpoint=p),
    lambda p: M.load_model("resnet18_cifar", checkpoint=p),
], ids=["create_model", "load_model"])
def test_checkpoint_of_another_model_names_both(resnet20_file, load):
    with pytest.raises(ValueError, match=r"weights for 'resnet20_cifar' .* 'resnet18_cifar' was asked for"):
        load(resnet20_file)


def test_checkpoint_without_card_that_does_not_fit(resnet20_file, no_network):
    M.card_path(resnet20_file).unlink()
    with pytest.raises(ValueError, match=r"r20.safetensors does not fit model 'resnet18_cifar': "
                                         r"missing keys \(30\): layer4\.0\.conv1\.weight"):
        M.load_checkpoint(M.create_model("resnet18_cifar"), resnet20_file, verify=False, name="resnet18_cifar")
    # a timm name with a card-less checkpoint loads without verification: the same error
    with pytest.raises(ValueError, match=r"does not fit model 'test_vit': missing keys .*unexpected keys"):
        M.create_model("test_vit", checkpoint=resnet20_file)


@pytest.mark.parametrize("damage", [lambda b: b[:1000], lambda b: bytes(reversed(b[:4096])), lambda b: b""],
                         ids=["truncated", "random", "empty"])
def test_unreadable_checkpoint_names_the_file(resnet20_file, damage):
    resnet20_file.write_bytes(damage(resnet20_file.read_bytes()))
    m = M.create_model("resnet20_cifar")
    with pytest.raises(ValueError, match=r"r20.safetensors is not a readable safetensors file .* truncated"):
        M.load_checkpoint(m, resnet20_file, verify=False)
    with pytest.raises(ValueError, match=r"r20.safetensors has SHA-256"):  # with its card: the hash first
        M.load_checkpoint(m, resnet20_file)


@pytest.mark.parametrize("text, why", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object, not a list"),
    ('{"model": "resnet20_cifar"}', "is malformed: 'sha256' must be"),
    ('{"sha256": "%s", "builder_kwargs": "distilled"}' % ("0" * 64), "is malformed: 'builder_kwargs' must be"),
    ('{"sha256": "%s", "model": 20}' % ("0" * 64), "is malformed: 'model' must be"),
], ids=["not-json", "list", "no-sha256", "bad-kwargs", "bad-model"])
def test_malformed_card_names_the_card(resnet20_file, text, why):
    M.card_path(resnet20_file).write_text(text)
    with pytest.raises(ValueError, match=rf"model card .*r20\.json {why}"):
        M.load_model("resnet20_cifar", checkpoint=resnet20_file)


@pytest.mark.parametrize("name, suggestion", [("resnet18", "resnet18_cifar"), ("resnet20", "resnet20_cifar"),
                                              ("deit_tiny", "deit_tiny_cifar")],
                         ids=["timm-name", "unknown", "unknown-vit"])
def test_near_miss_name_suggests_the_registry_name(no_network, name, suggestion):
    with pytest.raises(ValueError, match=f"did you mean {suggestion}\\?"):
        M.load_model(name)


def test_timm_name_goes_to_timm(monkeypatch, no_network):
    """A real timm name near a registry name (deit_tiny_patch16_224 ~ deit_tiny_cifar) is not a near miss."""
    import timm

    calls = []
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: calls.append((name, kw)) or torch.nn.Linear(1, 1))
    _, info = M.load_model("deit_tiny_patch16_224")
    assert calls == [("deit_tiny_patch16_224", {"pretrained": True})]
    assert info["checkpoint"] == "deit_tiny_patch16_224 published weights"


def test_timm_name_with_local_checkpoint_needs_no_network(tmp_path, monkeypatch, no_network):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = timm.create_model("test_vit", pretrained=False)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "own.safetensors"))
    model, info = M.load_model("test_vit", checkpoint=tmp_path / "own.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), model.state_dict().values()))
    assert info["checkpoint_sha256"] == M.sha256_file(tmp_path / "own.safetensors") and not model.training


def test_save_checkpoint_writes_through_atomic_write(tmp_path, monkeypatch):
    written = []
    import vitquant_core.checkpoints as C

    real = C.atomic_write
    monkeypatch.setattr(C, "atomic_write", lambda path, content: written.append(path) or real(path, content))
    M.save_checkpoint(M.create_model("resnet20_cifar"), tmp_path / "r.safetensors", {})
    assert written == [tmp_path / "r.safetensors", tmp_path / "r.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.safetensors"]  # no temporary left
