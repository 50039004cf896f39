"""Weight-sharing search: train a space's supernet once, then search its members by their accuracy
on the shared weights.

1. *Supernet training* (the one-shot engine's pre-training phase, ``segnas.search.oneshot``): every
   step trains the largest member, the smallest and ``sandwich_random`` members drawn uniformly
   (the sandwich rule of slimmable networks and BigNAS), on the training split less a held-out
   *meta-validation* part (``meta_val_fraction``); optionally the smaller members also learn from
   the largest one's predictions (``inplace_distill``, BigNAS). Checkpointed every epoch; resumable.
2. *Search*: regularized evolution (``segnas.search.strategies.saswot.RegularizedEvolution``) through
   the ask/tell loop; the loop rejects members predicted slower than the target; each candidate is
   scored by the weight-sharing evaluator (``segnas.evaluate.supernet``: its slices of the weights,
   BatchNorm statistics re-estimated on training images, mIoU on the meta-validation images, never
   on the validation split).

Any space whose supernet can run a chosen member (``WeightSharingSupernet``: ``mobile``, ``joint``,
``cells``) works; the ``mobile`` space's is once-for-all style (``segnas.spaces.mobile.supernet``).
With ``inherit_weights`` the winner's final training starts from its slices of the supernet (as
once-for-all fine-tunes its members); off by default, so that a comparison at equal training steps
stays equal. Not done here: once-for-all's progressive shrinking and its accuracy predictor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Optional

from pydantic import Field, ValidationInfo, model_validator
from torch.utils.data import Dataset, Subset

from segnas.config.base import PATH, Settings, refuse_idle
from segnas.config.search import SearchSettings
from segnas.data import meta_split
from segnas.engine.checkpoint import load_checkpoint, save_checkpoint
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.evaluate.supernet import SupernetEvaluator
from segnas.search.asktell import AskTellStrategy, DelegatingStrategy
from segnas.search.base import FoundNetwork, SearchContext, SearchResult, strategy
from segnas.search.evaluation import supernet_checkpoint
from segnas.search.oneshot.data import search_train_set
from segnas.search.oneshot.engine import OneShotEngine, SearchSchedule
from segnas.search.strategies.saswot import RegularizedEvolution
from segnas.spaces.base import MemberExtractable, WeightSharingSupernet
from segnas.utils import atomic_write_text


#: The settings of training the supernet (unused when it is pre-trained).
SUPERNET_TRAINING = ("epochs", "sandwich_random", "weight_lr", "inplace_distill")


class SupernetSearchSettings(Settings):
    space: str = "mobile"
    #: Settings of the space (its constructor's arguments).
    space_options: dict = Field(default_factory=dict)
    #: Epochs of supernet training over the meta-training images.
    epochs: int = Field(20, ge=1)
    #: Random members per training step besides the largest and the smallest.
    sandwich_random: int = Field(2, ge=0)
    weight_lr: float = Field(0.02, gt=0)
    #: In-place distillation (BigNAS): the smaller members learn from the largest's predictions with
    #: this weight, from the labels with 1 minus it (0: labels only).
    inplace_distill: float = Field(0.0, ge=0, le=1)
    #: The supernet of an earlier ``segnas search supernet`` run (its run directory or checkpoint) instead
    #: of training one; it must be of the same space, options and meta-validation split.
    pretrained: Optional[str] = Field(None, json_schema_extra=PATH)
    #: Fraction of the training split held out to score candidates on (never trained on by the supernet).
    meta_val_fraction: float = Field(0.15, gt=0, lt=1)
    #: Candidates are scored on at most this many meta-validation images.
    meta_val_images: int = Field(50, ge=1)
    #: Training images each candidate's BatchNorm statistics are re-estimated on (at most: the split's all when fewer).
    calibration_images: int = Field(80, ge=1)
    candidates: int = Field(300, ge=1)
    population: int = Field(50, ge=2)
    sample_size: int = Field(10, ge=1)
    top_k: int = Field(10, ge=1)
    #: The winner's final training starts from its slices of the supernet's weights.
    inherit_weights: bool = False

    @model_validator(mode="after")
    def _training_or_pretrained(self, info: ValidationInfo) -> "SupernetSearchSettings":
        """With ``pretrained`` no supernet is trained: its training settings are refused, named."""
        replaced = (self.pretrained is not None, f"a setting of the supernet's training, which pretrained "
                                                 f"({self.pretrained}) replaces")
        refuse_idle(self, info, dict.fromkeys(SUPERNET_TRAINING, replaced))
        return self



#: Beside a supernet search's checkpoints: the training images it held out (never trained on).
HELD_OUT_FILE = "held_out.json"


@strategy("supernet")
class SupernetSearch(DelegatingStrategy):
    """See the module docstring."""

    settings_class: ClassVar[type[Settings]] = SupernetSearchSettings
    cli_options = {"space": ("supernet.space", str, "Search space."),
                   "epochs": ("supernet.epochs", int, "Epochs of supernet training."),
                   "candidates": ("supernet.candidates", int, "Candidates to score on the supernet."),
                   "pretrained": ("supernet.pretrained", str, "Search an earlier run's supernet (no training).")}

    @classmethod
    def uses_search_size(cls, settings: SearchSettings) -> bool:
        return True  # the supernet trains, and its members are scored, on images of that size

    @classmethod
    def unused_settings(cls, settings: SearchSettings) -> dict[str, str]:
        unused = super().unused_settings(settings)
        if settings.supernet.pretrained is None:
            del unused["bf16"]  # the supernet's training computes in it
        return unused

    def __init__(self) -> None:
        self.checkpoint: Path | None = None
        self.supernet: WeightSharingSupernet | None = None
        self.train_set: Dataset | None = None
        self.meta_train: list[int] = []
        self.meta_val: list[int] = []
        #: wall seconds training the supernet took in this run (0 with a pretrained one)
        self.training_seconds = 0.0

    def make_search(self, settings: SupernetSearchSettings) -> AskTellStrategy:
        return RegularizedEvolution()

    # ------------------------------------------------------------------ supernet
    def prepare(self, ctx: SearchContext) -> None:
        section = ctx.section
        space = self.search_space(ctx)
        supernet = space.supernet(ctx.num_classes, ctx.latency.size)  # SegnasError for a space without one
        if not isinstance(supernet, WeightSharingSupernet):
            raise SegnasError(f"supernet.space: the supernet of {space.name!r} cannot run a chosen member "
                              "(no select()); use saswot or random on it")
        if section.inherit_weights and not isinstance(supernet, MemberExtractable):
            raise SegnasError(f"supernet.inherit_weights: the supernet of {space.name!r} cannot hand over a "
                              "member's weights (no subnet()); set it to false")
        self.supernet, self.train_set = supernet, search_train_set(ctx.settings)
        self.meta_train, self.meta_val = meta_split(len(self.train_set), section.meta_val_fraction,
                                                    ctx.settings.seed, setting="supernet.meta_val_fraction")
        if section.pretrained is not None:
            self.check_held_out(supernet_checkpoint(section.pretrained), ctx)  # refused now if missing
        super().prepare(ctx)

    def check_held_out(self, checkpoint: Path, ctx: SearchContext) -> None:
        """Refuse a pretrained supernet that trained on images this search scores candidates on (its
        run holds out others: another seed, training split or ``meta_val_fraction``)."""
        record = checkpoint.parent / HELD_OUT_FILE
        if not record.is_file():
            ctx.echo(f"supernet.pretrained: {checkpoint} records no held-out images (not a supernet search's "
                     "run): candidates may be scored on images it trained on")
            return
        held = json.loads(record.read_text())
        if held["meta_val"] != self.meta_val or held["images"] != len(self.train_set):
            raise SegnasError(f"supernet.pretrained: {checkpoint} was trained holding out {len(held['meta_val'])} of "
                              f"{held['images']} training images, not the {len(self.meta_val)} of "
                              f"{len(self.train_set)} this search scores on: search with its run's seed, data and "
                              "supernet.meta_val_fraction")

    def train_supernet(self, ctx: SearchContext) -> Path:
        """Train (or finish training) the supernet in this run; its checkpoint."""
        s, section = ctx.settings, ctx.section
        schedule = SearchSchedule(pretrain_epochs=section.epochs, search_epochs=0, batch_size=s.data.batch_size,
                                  weight_lr=section.weight_lr, sandwich_random=section.sandwich_random,
                                  inplace_distill=section.inplace_distill,
                                  device=s.device, bf16=s.bf16, seed=s.seed, workers=s.data.workers,
                                  progress=s.progress, sync_bn=s.sync_bn, minutes=s.minutes)
        engine = OneShotEngine(self.supernet, Subset(self.train_set, self.meta_train), schedule, ctx.run,
                               echo=ctx.echo)
        held_out = ctx.run.path / "checkpoints" / HELD_OUT_FILE
        held_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(held_out, json.dumps({"images": len(self.train_set), "meta_val": self.meta_val}))
        engine.resume_if_possible()
        engine.fit()
        self.training_seconds = engine.loop.elapsed
        return engine.pretrained_path

    def time_limit_s(self, ctx: SearchContext) -> float | None:
        """The search's ``minutes`` less what training the supernet took (at least one batch of candidates)."""
        limit = super().time_limit_s(ctx)
        return None if limit is None else max(limit - self.training_seconds, 1.0)

    def make_evaluator(self, ctx: SearchContext) -> Evaluator:
        section = ctx.section
        return SupernetEvaluator(self.space.name, self.checkpoint, ctx.num_classes, ctx.latency.size,
                                 ctx.settings.data, section.space_options, ctx.settings.search_size,
                                 section.meta_val_images, section.calibration_images, seed=ctx.settings.seed,
                                 meta_val=self.meta_val)

    def run(self, ctx: SearchContext) -> SearchResult:
        pretrained = ctx.section.pretrained
        self.checkpoint = supernet_checkpoint(pretrained) if pretrained else self.train_supernet(ctx)
        ctx.echo(f"searching the supernet of {self.checkpoint}")
        result = super().run(ctx)
        if ctx.section.inherit_weights:
            result.found.init = self.save_inherited(ctx, result.found)
        result.details["supernet"] = {"checkpoint": str(self.checkpoint), "meta_val_images": len(self.meta_val),
                                      "meta_train_images": len(self.meta_train)}
        return result

    def save_inherited(self, ctx: SearchContext, found: FoundNetwork) -> str:
        """The winner's slices of the supernet's weights as a model file for its final training."""
        self.supernet.load_state_dict(load_checkpoint(self.checkpoint)["supernet"])  # also when --pretrained
        path = ctx.run.path / "inherited.pt"
        save_checkpoint(path, {"model": self.supernet.subnet(found.arch).state_dict()})
        return str(path)
