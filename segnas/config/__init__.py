"""Typed settings for every job, with YAML in/out and one-line errors naming the bad field."""

from segnas.config.train import DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig
from segnas.config.io import load_config, save_config

__all__ = ["DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "TrainConfig", "load_config", "save_config"]
