"""Training and evaluation engine: losses, optimizers, schedules, EMA, checkpoints, run directories."""

from segnas.engine.checkpoint import load_checkpoint, save_checkpoint
from segnas.engine.evaluate import evaluate, iter_batches, predict_logits
from segnas.engine.losses import OhemCrossEntropy, SegmentationLoss, kd_loss
from segnas.engine.rundir import RunDir
from segnas.engine.trainer import Trainer, TrainResult

__all__ = ["load_checkpoint", "save_checkpoint", "evaluate", "iter_batches", "predict_logits",
           "OhemCrossEntropy", "SegmentationLoss", "kd_loss", "RunDir", "Trainer", "TrainResult"]
