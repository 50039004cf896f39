"""Evaluation for the RL search (Nekrasov et al.): the two-stage child evaluator with progressive
termination, Polyak averaging and distillation (``child``), and the pre-trained, cached encoder its
children share (``encoder``)."""

from segnas.evaluate.rl.child import ChildEvaluator, ChildSettings, child_crop, reward_of
from segnas.evaluate.rl.encoder import EncoderSettings, pretrained_encoder

__all__ = ["ChildEvaluator", "ChildSettings", "EncoderSettings", "child_crop", "pretrained_encoder", "reward_of"]
