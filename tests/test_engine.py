import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from segnas.config import TrainConfig
from segnas.config.train import LossConfig
from segnas.engine import load_checkpoint
from segnas.engine.ema import ModelEMA
from segnas.errors import SegnasError
from segnas.jobs import train_job


def test_training_lowers_loss_and_writes_run_directory(tiny_cfg):
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=4)))
    run = Path(result.run_dir)
    for name in ("config.yaml", "log.txt", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert 0.0 <= result.best_miou <= 1.0
    assert not list((run / "checkpoints").glob("*.tmp")), "temporary checkpoint files left behind"
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["model_spec"] == {"kind": "zoo", "name": "fast_scnn", "options": {"width": 0.5}}


def test_same_seed_same_result(tiny_cfg):
    a = train_job(TrainConfig.model_validate(tiny_cfg(epochs=2)))
    b = train_job(TrainConfig.model_validate(tiny_cfg(epochs=2)))
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]


def test_time_budget_stops_training(tiny_cfg):
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=500, time_budget_min=0.02)))
    assert result.epochs_done < 500
    assert result.train_seconds < 30
    assert "val_miou" in result.history[-1]  # the final (budget-ended) epoch is evaluated


def test_step_budget_stops_mid_epoch_and_the_schedule_runs_over_it(tiny_cfg):
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=50, max_steps=5, **{"optim.schedule": "poly"})))
    per_epoch = result.history[0]["step"]
    assert result.history[-1]["step"] == 5 and per_epoch < 5
    assert result.epochs_done == -(-5 // per_epoch) and "val_miou" in result.history[-1]
    # no warm-up: the poly schedule has run over the 5 steps (lr ≈ 0.2^0.9 of the base at the last),
    # not over 50 epochs (it would still be above 0.97 of the base)
    assert result.history[-1]["lr"] < 0.5 * 0.003


def test_a_step_budget_trains_as_many_steps_on_a_loaded_machine(tiny_cfg, monkeypatch):
    """A step budget is the same training whatever else the cores are doing: here every reading of
    the CPU and wall clocks advances 10 minutes (a machine far too loaded for any time budget)."""
    idle = train_job(TrainConfig.model_validate(tiny_cfg(epochs=None, max_steps=7, budget_clock="cpu")))
    ticks = iter(range(10**6))
    monkeypatch.setattr(time, "process_time", lambda: 600.0 * next(ticks))
    monkeypatch.setattr(time, "perf_counter", lambda: 600.0 * next(ticks))
    loaded = train_job(TrainConfig.model_validate(tiny_cfg(epochs=None, max_steps=7, budget_clock="cpu",
                                                           job="loaded")))
    assert loaded.train_seconds > 100 * idle.train_seconds  # the clock did see the load
    assert [r["step"] for r in loaded.history] == [r["step"] for r in idle.history] and idle.history[-1]["step"] == 7
    assert loaded.final["val_miou"] == pytest.approx(idle.final["val_miou"])  # the same training


def native_bf16(monkeypatch, native: bool) -> None:
    """Make this CPU count as having (or lacking) native bf16."""
    monkeypatch.setattr(sys.modules["segnas.engine.evaluate"], "cpu_has_native_bf16", lambda: native)


def test_bf16_channels_last_ema_ohem_sgd(tiny_cfg, monkeypatch):
    native_bf16(monkeypatch, True)  # bf16 on any CPU
    cfg = tiny_cfg(epochs=1, bf16=True, channels_last=True, ema_decay=0.99, **{"loss.kind": "ohem",
                   "optim.name": "sgd", "optim.lr": 0.01, "optim.clip_grad_norm": 1.0, "optim.warmup_iters": 2,
                   "optim.schedule": "cosine"})
    result = train_job(TrainConfig.model_validate(cfg))
    assert torch.isfinite(torch.tensor(result.history[-1]["train_loss"])) and result.bf16


def test_bf16_falls_back_to_fp32_with_a_notice_where_the_cpu_emulates_it(tiny_cfg, monkeypatch):
    from segnas.engine.evaluate import usable_bf16

    said = []
    native_bf16(monkeypatch, False)
    assert usable_bf16(True, said.append) is False and "no native bf16" in said[0]
    assert usable_bf16(False, said.append) is False and len(said) == 1
    import segnas.engine.step as step

    autocast_args = []
    real_autocast = step.autocast_context
    monkeypatch.setattr(step, "autocast_context",
                        lambda bf16, *device: autocast_args.append(bf16) or real_autocast(bf16, *device))
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=1, bf16=True)), echo=said.append)
    assert autocast_args and not any(autocast_args) and not result.bf16  # trained and evaluated in fp32
    notices = lambda: sum("no native bf16" in m for m in said)  # noqa: E731
    assert notices() == 2 and torch.isfinite(torch.tensor(result.history[-1]["train_loss"]))
    native_bf16(monkeypatch, True)
    assert usable_bf16(True, said.append) is True and notices() == 2


def test_distillation_from_teacher_checkpoint(tiny_cfg):
    teacher = train_job(TrainConfig.model_validate(tiny_cfg(epochs=1)))
    cfg = tiny_cfg(epochs=1, **{"loss.teacher": str(Path(teacher.run_dir) / "checkpoints" / "best.pt"),
                                "loss.kd_weight": 0.5, "loss.kd_temperature": 2.0})
    student = train_job(TrainConfig.model_validate(cfg))
    assert student.history[-1]["train_kd"] > 0


def test_a_teacher_model_is_trained_once_cached_and_distilled_by_every_student(tiny_cfg, tmp_path, monkeypatch):
    import yaml

    from segnas.training.cached import DONE_FILE

    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    messages: list[str] = []
    cfg = tiny_cfg(epochs=1, **{"loss.teacher_model": "enet", "loss.teacher_steps": 2, "loss.kd_weight": 0.5})
    first = train_job(TrainConfig.model_validate(cfg), echo=messages.append)
    teachers = list((tmp_path / "cache" / "teachers").iterdir())
    assert len(teachers) == 1 and teachers[0].name.startswith("enet-") and (teachers[0] / DONE_FILE).is_file()
    teacher_run = next(p for p in teachers[0].iterdir() if p.is_dir())
    teacher_cfg = yaml.safe_load((teacher_run / "config.yaml").read_text())
    assert teacher_cfg["max_steps"] == 2 and teacher_cfg["seed"] == 0 and teacher_cfg["loss"]["kd_weight"] == 1.0
    student_cfg = yaml.safe_load((Path(first.run_dir) / "config.yaml").read_text())
    assert teacher_cfg["data"] == student_cfg["data"]
    recorded = student_cfg["loss"]
    assert recorded["teacher"] == str(teacher_run / "checkpoints" / "best.pt") and recorded["teacher_model"] is None
    assert first.history[-1]["train_kd"] > 0
    # training the teacher left the student's random streams alone: with the teacher cached, the same run
    # (the teacher named as the zoo accepts any name: the same cached teacher)
    again = train_job(TrainConfig.model_validate({**cfg, "loss": {**cfg["loss"], "teacher_model": "ENet"},
                                                  "out_dir": str(tmp_path / "again")}))
    assert again.history[-1]["train_loss"] == first.history[-1]["train_loss"]
    assert list((tmp_path / "cache" / "teachers").iterdir()) == teachers
    assert "loss.teacher_model enet" in (Path(first.run_dir) / "log.txt").read_text()
    assert load_checkpoint(recorded["teacher"])["model_spec"]["name"] == "enet"
    # the student's run resumes (and reads back) with the teacher it recorded
    from segnas.training.cached import resumable_training

    assert resumable_training(cfg["out_dir"], TrainConfig.model_validate(cfg)) == Path(first.run_dir)
    assert resumable_training(cfg["out_dir"], TrainConfig.model_validate(
        {**cfg, "loss": {**cfg["loss"], "teacher_steps": 3}})) is None  # another teacher
    assert train_job(None, resume=first.run_dir).final["val_miou"] == first.final["val_miou"]
    # another student seed, or another distillation weight, distils the same teacher: not trained again
    train_job(TrainConfig.model_validate({**cfg, "seed": 1, "loss": {**cfg["loss"], "kd_weight": 2.0}}),
              echo=messages.append)
    assert len([p for p in teachers[0].iterdir() if p.is_dir()]) == 1 and any("reusing" in m for m in messages)
    # other teacher steps: another teacher
    train_job(TrainConfig.model_validate({**cfg, "loss": {**cfg["loss"], "teacher_steps": 3}}))
    assert len(list((tmp_path / "cache" / "teachers").iterdir())) == 2
    with pytest.raises(ValueError, match="not both"):
        TrainConfig.model_validate(tiny_cfg(**{"loss.teacher_model": "enet", "loss.teacher": recorded["teacher"]}))
    with pytest.raises(SegnasError, match="loss.teacher_model: unknown name 'nosuch'"):
        train_job(TrainConfig.model_validate(tiny_cfg(**{"loss.teacher_model": "nosuch"})))


def test_a_cached_trainings_key_survives_a_new_setting_at_its_default(tiny_cfg):
    """Keys leave settings at their defaults out: a setting that a later segnas adds (at a default
    that keeps the old behaviour) does not retrain every cached teacher and encoder; any value that
    changes the training changes the key."""
    from segnas.training.cached import training_key

    base = TrainConfig.model_validate(tiny_cfg())
    every_default = TrainConfig.model_validate({**tiny_cfg(), **{
        "loss": LossConfig().model_dump(mode="json"), "swa_start": None, "accumulate_batches": 1,
        "data": {**tiny_cfg()["data"], "crop_fractions": [1.0], "blur_prob": 0.0}}})
    assert training_key(every_default) == training_key(base)
    for changed in ({"swa_start": 0.5, "ema_decay": None}, {"loss.boundary_weight": 0.5}, {"data.crop_fractions": [0.5]},
                    {"seed": 1}, {"model.options": {"width": 0.25}}):
        assert training_key(TrainConfig.model_validate(tiny_cfg(**changed))) != training_key(base), changed
    # where and how fast it runs is not in the key
    assert training_key(TrainConfig.model_validate(tiny_cfg(threads=2, out_dir="elsewhere"))) == training_key(base)


def test_the_defaults_a_training_key_leaves_out_are_pinned() -> None:
    """Keys leave defaults out, so a changed default would reuse cached trainings made under the old
    one: this pin fails on any change of TrainConfig's defaults."""
    import hashlib

    from segnas.training.cached import KEY_FORMAT

    defaults = TrainConfig.model_construct().model_dump(mode="json")
    digest = hashlib.sha1(json.dumps(defaults, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert (KEY_FORMAT, digest) == (2, "d7a7c40423476ef7"), (
        "TrainConfig's defaults changed: if a changed default changes what a training learns, bump KEY_FORMAT in "
        "segnas/training/cached.py (cached teachers and encoders are then trained again); a new setting whose "
        f"default keeps the old training needs only this pin updated (to {digest!r})")


def test_a_run_of_other_settings_is_not_continued(tiny_cfg, tmp_path):
    """A job resumes its newest run only when that run trains the same thing (a recipe changed, or
    segnas updated, between two sessions of a study: it trains afresh and says so)."""
    from segnas.training.cached import resumable_training

    cfg = TrainConfig.model_validate(tiny_cfg(epochs=1))
    run = Path(train_job(cfg).run_dir)
    assert resumable_training(cfg.out_dir, cfg) == run
    assert resumable_training(cfg.out_dir, cfg.model_copy(update={"threads": 1, "progress": False})) == run
    said: list[str] = []
    other = TrainConfig.model_validate(tiny_cfg(epochs=1, **{"optim.lr": 0.5}))
    assert resumable_training(cfg.out_dir, other, echo=said.append) is None and "other settings" in said[0]
    assert resumable_training(cfg.out_dir, cfg, job="another-job") is None
    assert resumable_training(tmp_path / "nothing-here", cfg) is None


def test_teacher_class_count_mismatch_is_a_user_error(tiny_cfg, tmp_path):
    import numpy as np
    from PIL import Image

    teacher = train_job(TrainConfig.model_validate(tiny_cfg(epochs=1)))
    root = tmp_path / "two_classes"  # a folder dataset of 2 classes; the teacher predicts the synthetic scenes' 11
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for k in range(2):
            image = np.random.default_rng(k).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"i{k}.png")
            Image.fromarray((np.arange(64)[None].repeat(48, 0) % 2).astype(np.uint8), "L").save(
                root / "masks" / split / f"i{k}.png")
    cfg = tiny_cfg(**{"loss.teacher": str(Path(teacher.run_dir) / "checkpoints" / "best.pt")})
    cfg["data"] = {"name": "folder", "root": str(root), "options": {"classes": ["a", "b"]}, "crop_size": [48, 64],
                   "batch_size": 2, "eval_batch_size": 2}
    with pytest.raises(SegnasError, match=r"loss\.teacher: .*best\.pt predicts \d+ classes \(.*\), the dataset "
                                          r"has 2 \(a, b\)"):
        train_job(TrainConfig.model_validate(cfg))
    # the same number of classes in another order: it would teach other classes
    best = Path(teacher.run_dir) / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=False)
    state["classes"]["names"] = list(reversed(state["classes"]["names"]))
    torch.save(state, tmp_path / "reordered.pt")
    with pytest.raises(SegnasError, match=r"loss\.teacher: .*reordered\.pt was trained on classes Bicyclist, .*first "
                                          r"difference: 'Bicyclist' vs 'Sky'"):
        train_job(TrainConfig.model_validate(tiny_cfg(**{"loss.teacher": str(tmp_path / "reordered.pt")})))
    with pytest.raises(SegnasError, match=r"loss\.teacher \(--teacher\): .*nope\.pt"):
        train_job(TrainConfig.model_validate(tiny_cfg(**{"loss.teacher": str(tmp_path / "nope.pt")})))


def test_ema_tracks_weights():
    model = torch.nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # effective decay min(0.5, 2/11)
    d = 2 / 11
    expected = d * (model.weight - 1.0) + (1 - d) * model.weight
    assert torch.allclose(ema.module.weight, expected)


def test_corrupt_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SegnasError, match="bad.pt"):
        load_checkpoint(bad)


def _final_record(run: Path) -> dict:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]


def test_killed_run_resumes_to_the_same_result(tiny_yaml, tmp_path):
    """Kill a training process with SIGKILL mid-run, resume it, and compare with an uninterrupted run."""
    cfg_path = tiny_yaml(epochs=5, ema_decay=0.9, **{"data.options": {"size": [48, 64], "length": 24},
                                                     "optim.warmup_iters": 8})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "segnas", "train", "--config", str(cfg_path)]

    full = subprocess.run(cmd + ["--out-dir", str(tmp_path / "full")], capture_output=True, text=True, env=env)
    assert full.returncode == 0, full.stderr
    full_run = next((tmp_path / "full").iterdir())

    proc = subprocess.Popen(cmd + ["--out-dir", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    run = None
    while time.time() < deadline:
        runs = list((tmp_path / "killed").glob("*")) if (tmp_path / "killed").exists() else []
        if runs and (runs[0] / "metrics.jsonl").is_file() and len((runs[0] / "metrics.jsonl").read_text().splitlines()) >= 2:
            run = runs[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run is not None, "training did not reach epoch 2"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] < 5

    resumed = subprocess.run([sys.executable, "-m", "segnas", "train", "--resume", str(run)],
                             capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _final_record(full_run), _final_record(run)
    assert a["epoch"] == b["epoch"] == 5
    assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
    assert a["val_miou"] == pytest.approx(b["val_miou"], abs=1e-6)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 5


# ------------------------------------------------------------------------------ device
def test_device_setting_is_resolved_or_rejected_with_the_value_named():
    from segnas.engine.device import describe_device, resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "mps", "cuda:x"):
        with pytest.raises(SegnasError, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(SegnasError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert describe_device("auto") == "cpu"
    with pytest.raises(ValueError, match="device"):
        TrainConfig.model_validate({"device": "gpu"})


def test_auto_device_without_a_gpu_trains_exactly_as_on_the_cpu(tiny_cfg):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: auto means cuda here")
    a = train_job(TrainConfig.model_validate(tiny_cfg(epochs=2)))
    b = train_job(TrainConfig.model_validate(tiny_cfg(epochs=2, device="auto")))
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_lowers_loss_and_its_checkpoint_loads_on_the_cpu(tiny_cfg):
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=3, device="cuda")))
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0] and 0.0 <= result.best_miou <= 1.0
    state = load_checkpoint(Path(result.run_dir) / "checkpoints" / "last.pt")
    assert all(t.device.type == "cpu" for t in state["model"].values())


def test_cpu_clock_budget_is_refused_on_a_gpu(tiny_cfg, monkeypatch):
    from segnas.engine import trainer

    monkeypatch.setattr(trainer, "resolve_device", lambda name: torch.device("cuda"))  # the check before the run
    with pytest.raises(SegnasError, match="budget_clock"):
        train_job(TrainConfig.model_validate(tiny_cfg(epochs=2, time_budget_min=1.0, budget_clock="cpu",
                                                      device="cuda")))


def test_a_run_begun_on_a_gpu_resumes_on_the_cpu_when_told_to(tiny_cfg):
    import yaml

    from segnas.engine import save_checkpoint

    run = Path(train_job(TrainConfig.model_validate(tiny_cfg(epochs=1))).run_dir)
    # make it a GPU run killed after epoch 1 of 2
    config = yaml.safe_load((run / "config.yaml").read_text())
    for name in ("config.yaml", ".started.yaml"):  # (as begun: config.yaml alone edited would be refused)
        (run / name).write_text(yaml.safe_dump({**config, "epochs": 2, "device": "cuda"}))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    save_checkpoint(run / "checkpoints" / "last.pt", {**state, "finished": False})
    if not torch.cuda.is_available():
        with pytest.raises(SegnasError, match="no CUDA GPU"):
            train_job(None, resume=run)
    result = train_job(None, resume=run, changes={"device": "cpu"})
    assert result.epochs_done == 2 and result.history[-1]["epoch"] == 2


class _NoBatchStatistics(torch.nn.Module):
    """A network whose gradient over a batch is the mean of its gradients over the batch's halves
    (no BatchNorm): accumulation over two half batches must then step exactly like one full batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _one_step_weights(tmp_path: Path, batch: int, accumulate: int, name: str) -> torch.Tensor:
    from segnas.engine.rundir import RunDir
    from segnas.engine.trainer import Trainer

    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    masks = torch.randint(0, 3, (4, 8, 8), generator=torch.Generator().manual_seed(2))
    data = torch.utils.data.TensorDataset(images, masks)
    cfg = TrainConfig.model_validate({"data": {"batch_size": batch}, "optim": {"name": "sgd", "lr": 0.5,
                                      "momentum": 0.0, "weight_decay": 0.0}, "loss": {"kind": "ce", "aux_weight": 0},
                                      "max_steps": 1, "accumulate_batches": accumulate, "progress": False})
    model = _NoBatchStatistics()
    trainer = Trainer(model, data, None, cfg, RunDir.create(tmp_path, name), {}, {"names": ["a", "b", "c"]})
    trainer.train_one_epoch(trainer._loader(), steps_total=1)
    assert trainer.loop.step == 1
    return model.conv.weight.detach().clone()


def test_accumulating_two_half_batches_steps_like_one_full_batch(tmp_path):
    full = _one_step_weights(tmp_path, batch=4, accumulate=1, name="full")
    halves = _one_step_weights(tmp_path, batch=2, accumulate=2, name="halves")
    start = _NoBatchStatistics().conv.weight.detach()
    assert not torch.allclose(full, start)
    torch.testing.assert_close(halves, full, rtol=1e-5, atol=1e-6)


def test_accumulation_counts_optimizer_steps_and_skips_an_incomplete_group(tiny_cfg, tmp_path, monkeypatch):
    from segnas.engine.trainer import Trainer

    forwards = []
    real = Trainer.train_one_epoch

    def counting(self, loader, steps_total, bar=None):
        model_forward = self.model.forward
        self.model.forward = lambda *a, **k: (forwards.append(1), model_forward(*a, **k))[1]
        try:
            return real(self, loader, steps_total, bar)
        finally:
            del self.model.forward

    monkeypatch.setattr(Trainer, "train_one_epoch", counting)
    # 12 images at batch 4: 3 batches an epoch, accumulated by 2 -> 1 optimizer step and 2 batches an epoch
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=3, accumulate_batches=2)))
    assert [r["step"] for r in result.history] == [1, 2, 3] and len(forwards) == 6
    runs = set((tmp_path / "runs").iterdir())
    with pytest.raises(SegnasError, match="accumulate_batches: 4 exceeds the 3 batches"):
        train_job(TrainConfig.model_validate(tiny_cfg(epochs=1, accumulate_batches=4)))
    assert set((tmp_path / "runs").iterdir()) == runs  # refused before any run directory


def test_batches_of_one_image_are_refused_where_a_batchnorm_sees_one_value(tiny_cfg, tmp_path):
    """Fast-SCNN's pyramid pooling normalizes 1x1 maps: a batch of one cannot train it (refused before
    any run directory); ENet normalizes whole feature maps only and trains on batches of one."""
    with pytest.raises(SegnasError, match=r"data.batch_size: training batches of one image \(data.batch_size "
                                          r"is 1\) cannot train the network's BatchNorm layer 'global_features"):
        train_job(TrainConfig.model_validate(tiny_cfg(epochs=1, **{"data.batch_size": 1})))
    with pytest.raises(SegnasError, match=r"the training split holds 1 image"):
        train_job(TrainConfig.model_validate(tiny_cfg(epochs=1, **{"data.options": {"size": [48, 64], "length": 1}})))
    assert not (tmp_path / "runs").exists()
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=1, **{"data.batch_size": 1,
                                                                       "model": {"name": "enet"}})))
    assert result.history


def test_a_loss_that_becomes_nan_stops_the_training_as_diverged(tiny_cfg):
    """A non-finite loss ends the training with ``TrainingDiverged`` (a SegnasError naming the learning
    rate): a search that trains candidates briefly counts that candidate failed and goes on."""
    from segnas.errors import TrainingDiverged

    cfg = tiny_cfg(epochs=None, max_steps=4, **{"optim.name": "sgd", "optim.lr": 1e12})
    with pytest.raises(TrainingDiverged, match=r"optim.lr: the loss became nan at step \d+; lower the learning rate"):
        train_job(TrainConfig.model_validate(cfg))
    run = next(Path(cfg["out_dir"]).iterdir())  # its log says why it ended
    assert "stopped: optim.lr: the loss became nan" in (run / "log.txt").read_text()


def test_a_run_another_process_runs_is_refused_and_a_refused_resume_touches_nothing(tiny_cfg, tmp_path):
    import fcntl

    from segnas.engine.rundir import LOCK_FILE, RunDir

    run = Path(train_job(TrainConfig.model_validate(tiny_cfg(epochs=1))).run_dir)
    assert not RunDir.in_use(run)
    with open(run / LOCK_FILE, "a") as other:  # another process's resume, still running
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert RunDir.in_use(run)  # (what compare --status reads)
        with pytest.raises(SegnasError, match="another process is running this job now"):
            train_job(None, resume=run)
    # a reader's brief probe (compare --status beside a resume that starts) does not refuse the resume
    with open(run / LOCK_FILE) as reader:
        fcntl.flock(reader, fcntl.LOCK_SH | fcntl.LOCK_NB)
        threading.Timer(0.2, fcntl.flock, (reader, fcntl.LOCK_UN)).start()
        train_job(None, resume=run)
    # a search run given to a training's resume: refused before its folder is touched
    search = tmp_path / "search"
    search.mkdir()
    (search / "config.yaml").write_text("method: saswot\n")
    (search / ".search_state.json.ab12cd34.tmp").write_text("{")
    with pytest.raises(SegnasError, match=r"a search run, not a training run; continue it with segnas search saswot "
                                          r"--resume .*search \(search\(resume=...\) from Python\)"):
        train_job(None, resume=search)
    assert sorted(p.name for p in search.iterdir()) == [".search_state.json.ab12cd34.tmp", "config.yaml"]


def test_a_small_training_split_is_scored_about_a_hundred_times_not_every_epoch(tmp_path, monkeypatch):
    """By default the validation split is scored every epoch, or, where an epoch is a step or a few
    (a small split) and the budget holds more than DEFAULT_EVALUATIONS epochs, every k-th epoch."""
    import segnas.engine.trainer as trainer
    from segnas import api
    from segnas.engine.trainer import eval_interval

    assert eval_interval(None, 60) == 1 and eval_interval(None, 2700) == 27 and eval_interval(None, None) == 1
    assert eval_interval(3, 2700) == 3
    monkeypatch.setattr(trainer, "DEFAULT_EVALUATIONS", 2)
    settings = {"model.name": "fast_scnn", "model.options.width": 0.5, "data.name": "synthetic",
                "data.options": {"size": [32, 40], "length": 4}, "data.crop_size": "32x40", "data.batch_size": 4,
                "max_steps": 8, "threads": 1, "progress": False, "out_dir": str(tmp_path)}
    scored = [row["epoch"] for row in api.train(settings).history if "val_miou" in row]
    assert scored == [4, 8]  # 8 one-step epochs, scored twice
    scored = [row["epoch"] for row in api.train({**settings, "eval_every": 3}).history if "val_miou" in row]
    assert scored == [3, 6, 8]


def test_lines_said_before_the_run_folder_existed_keep_their_time_in_its_log(tmp_path):
    """A job's lines from before its run folder (data notes, a search's calibration) go into log.txt
    stamped when they were said, not when the folder was made."""
    from segnas.engine.rundir import RunDir, release_all
    from segnas.progress import SaidBeforeRun

    said = SaidBeforeRun(None)
    said("calibrating the latency correction")
    said.lines[0] = (time.mktime((2020, 1, 2, 3, 4, 5, 0, 0, -1)), said.lines[0][1])  # (said long ago)
    run = RunDir.create(tmp_path, "job")
    said.log_into(run.log)
    run.log("started")
    lines = (run.path / "log.txt").read_text().splitlines()
    assert lines[0] == "2020-01-02 03:04:05 calibrating the latency correction"
    assert lines[1].endswith(" started") and not lines[1].startswith("2020")
    release_all()
