"""The programmatic API behind the CLI: jobs composed from settings (train, eval, predict, demo)."""

from segnas.jobs.models import build_network, load_trained, model_spec_from_config
from segnas.jobs.train import make_datasets, train_job

__all__ = ["build_network", "load_trained", "model_spec_from_config", "make_datasets", "train_job"]
