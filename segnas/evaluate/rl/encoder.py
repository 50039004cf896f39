"""The pre-trained encoder every child of an RL search shares.

The paper starts from an ImageNet-pre-trained MobileNet-v2; segnas downloads no weights, so the
encoder is pre-trained here by segnas itself: the ``encdec`` encoder's zoo segmenter (the encoder
with a small DeepLabv3-style head, e.g. ``mobilenetv2_deeplabv3``) trained as an ordinary
segmentation network on the training split by the shared trainer (``segnas.training.train_job``).
The result is cached under ``<cache>/encoders/<encoder>-<key>/`` (``segnas.utils.cache_dir``),
keyed by everything it depends on (data settings, encoder kind and width, steps, recipe, its own
seed), so later searches on the same data reuse it; a killed pre-training resumes from its run
directory.

A user with better weights (e.g. ImageNet weights converted to this encoder's state dict) gives
them as ``weights`` instead: nothing is then pre-trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field, ValidationError

from segnas.config.base import PATH, Settings
from segnas.config.io import merged
from segnas.config.train import DataConfig, TrainConfig
from segnas.errors import SegnasError
from segnas.progress import Echo
from segnas.spaces.encdec.encoder import encoder_kind
from segnas.training.cached import trained_once, training_key
from segnas.utils import cache_dir

#: The pre-training recipe (TrainConfig fields; ``recipe`` overrides them).
ENCODER_RECIPE: dict[str, Any] = {
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 4e-5, "schedule": "poly",
              "warmup_iters": 50},
    "loss": {"kind": "ce"}, "ema_decay": None, "eval_every": 10**9,
}


class EncoderSettings(Settings):
    """Where the children's encoder comes from (the RL strategy's ``encoder:`` section)."""

    #: Weights to use as they are (an encoder state dict, or a checkpoint of the encoder's segmenter
    #: or of an encdec network, e.g. converted ImageNet weights): nothing is pre-trained.
    weights: Optional[str] = Field(None, json_schema_extra=PATH)
    #: Optimizer steps of the pre-training (0: a randomly initialized encoder, for tests).
    steps: int = Field(2000, ge=0)
    batch_size: Optional[int] = Field(None, ge=1)
    #: Overrides of ``ENCODER_RECIPE`` (TrainConfig fields).
    recipe: dict[str, Any] = Field(default_factory=dict)
    #: Seed of the pre-training (its own, not the search's: searches with other seeds share it).
    seed: int = 0


def pretrain_config(data: DataConfig, encoder: str, width: float, settings: EncoderSettings, folder: Path,
                    device: str = "cpu", threads: int | None = None, progress: bool = False) -> TrainConfig:
    """The training job that pre-trains ``encoder`` (its zoo segmenter) on the training split."""
    fields = merged(ENCODER_RECIPE, settings.recipe)
    dc = data.model_dump(mode="json")
    dc["val_split"] = ""  # the search's reward is measured on a part of the training split; no val here
    if settings.batch_size:
        dc["batch_size"] = settings.batch_size
    fields.update({"job": f"encoder-{encoder}", "data": dc,
                   "model": {"name": encoder_kind(encoder).segmenter, "options": {"width": width}},
                   "max_steps": settings.steps, "epochs": None, "seed": settings.seed, "out_dir": str(folder),
                   "device": device, "threads": threads, "progress": progress})
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SegnasError(f"rl.encoder.recipe: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def pretrained_encoder(data: DataConfig, encoder: str, width: float, settings: EncoderSettings, device: str = "cpu",
                       threads: int | None = None, progress: bool = False,
                       echo: Echo | None = None, root: str | Path | None = None) -> Path | None:
    """The weights file of the children's encoder: ``settings.weights``, else the cached pre-training
    for these settings (run now, or resumed, when not finished). None with ``steps`` 0 and no file."""
    echo = echo or (lambda m: None)
    if settings.weights:
        path = Path(settings.weights)
        if not path.is_file():
            raise SegnasError(f"rl.encoder.weights: {path}: file not found")
        return path
    if settings.steps == 0:
        return None
    cfg = pretrain_config(data, encoder, width, settings, Path("."), device, threads, progress)
    folder = Path(root) if root is not None else cache_dir() / "encoders" / f"{encoder}-{training_key(cfg)}"
    return trained_once(cfg, folder, f"encoder {encoder} (width {width}, {settings.steps} steps)", echo)
