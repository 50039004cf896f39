"""``model.init``: a training starts from the tensors of a checkpoint or state dict that match the
built network by name and shape, says how many it loaded, and refuses a file it cannot use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segnas.config.train import TrainConfig
from segnas.engine.checkpoint import load_checkpoint, save_checkpoint
from segnas.errors import SegnasError
from segnas.training import train_job
from segnas.training.models import load_init_weights
from segnas.zoo import build_model


def _net(classes: int = 11, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("fast_scnn", classes, width=0.5)


def test_matching_tensors_are_loaded_and_the_rest_keeps_its_initialization(tmp_path):
    source = _net(classes=5, seed=1)  # another classifier: its last layer has another shape
    path = tmp_path / "five.pt"
    torch.save(source.state_dict(), path)
    net = _net(seed=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    info = load_init_weights(net, path)
    src, now = source.state_dict(), net.state_dict()
    other = [k for k in now if src[k].shape != now[k].shape]
    assert other and info == {"weights": str(path), "loaded": len(now) - len(other), "of": len(now),
                              "shape_mismatch": len(other)}
    assert all(torch.equal(now[k], src[k]) for k in now if k not in other)
    assert all(torch.equal(now[k], before[k]) for k in other)
    assert any(not torch.equal(src[k], before[k]) for k in now if k not in other)  # the load changed something


def test_a_segnas_checkpoint_and_a_partial_state_dict_are_both_accepted(tmp_path):
    source = _net(seed=1).state_dict()
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(checkpoint, {"model": source, "model_spec": {"kind": "zoo", "name": "fast_scnn"}})
    assert load_init_weights(_net(seed=2), checkpoint)["loaded"] == len(source)
    part = {k: v for k, v in list(source.items())[:5]}
    partial = tmp_path / "part.pt"
    torch.save({**part, "not.in.the.network": torch.zeros(3)}, partial)
    net = _net(seed=2)
    assert load_init_weights(net, partial)["loaded"] == 5
    assert all(torch.equal(net.state_dict()[k], v) for k, v in part.items())


def test_a_checkpoint_with_an_ema_gives_the_averaged_weights_training_scored(tmp_path):
    raw, averaged = _net(seed=1).state_dict(), _net(seed=3).state_dict()
    last = tmp_path / "last.pt"  # as a training's last.pt keeps them: raw in "model", the EMA beside
    save_checkpoint(last, {"model": raw, "ema": {"module": averaged, "decay": 0.999},
                           "model_spec": {"kind": "zoo", "name": "fast_scnn"}})
    net = _net(seed=2)
    load_init_weights(net, last)
    assert all(torch.equal(v, averaged[k]) for k, v in net.state_dict().items())
    with pytest.raises(SegnasError, match="a folder, not a checkpoint file; give its checkpoints/best.pt"):
        (tmp_path / "run" / "checkpoints").mkdir(parents=True)
        load_init_weights(net, tmp_path / "run")


def test_an_unusable_init_file_is_one_line_naming_it(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"head.weight": torch.zeros(2, 2)}, foreign)
    wrong_shapes = tmp_path / "shapes.pt"
    torch.save({k: torch.zeros(1) for k in _net().state_dict()}, wrong_shapes)
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    for path, message in ((tmp_path / "nope.pt", "file not found"), (garbage, "not a readable"),
                          (foreign, "no tensor matches .* 'head.weight' is not one of its names"),
                          (wrong_shapes, "no tensor matches .* has shape \\[1\\]"),
                          (not_weights, "expected a segnas checkpoint or a state dict")):
        with pytest.raises(SegnasError, match=f"^model.init: {path}: {message}") as err:
            load_init_weights(_net(), path)
        assert "\n" not in str(err.value)


def test_a_training_starts_from_model_init_and_records_it(tiny_cfg, tmp_path):
    source = _net(seed=123).state_dict()  # not the training's own initialization (seed 0)
    path = tmp_path / "init.pt"
    torch.save(source, path)
    # a learning rate of ~0: after one step the trained weights are still the loaded ones
    cfg = tiny_cfg(epochs=None, max_steps=1, **{"model.init": str(path), "optim.lr": 1e-12, "optim.weight_decay": 0.0})
    messages: list[str] = []
    result = train_job(TrainConfig.model_validate(cfg), echo=messages.append)
    assert result.init == {"weights": str(path), "loaded": len(source), "of": len(source), "shape_mismatch": 0}
    run = Path(result.run_dir)
    assert json.loads((run / "init.json").read_text()) == result.init
    assert any(m.startswith(f"model.init: loaded {len(source)} of {len(source)} tensors") for m in messages)
    trained = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    weights = [k for k, v in source.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.allclose(trained[k], source[k], atol=1e-6) for k in weights)
    # resumed with a checkpoint, the run reports its earlier load (the file may be gone by then)
    path.unlink()
    assert train_job(None, resume=run).init == result.init


def test_a_training_with_an_unusable_init_is_refused_before_a_run_directory_exists(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"model.init": str(tmp_path / "missing.pt")})
    with pytest.raises(SegnasError, match="model.init: .*missing.pt: file not found"):
        train_job(TrainConfig.model_validate(cfg))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
