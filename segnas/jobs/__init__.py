"""The programmatic API behind the CLI: jobs composed from settings (train, eval, predict, bench,
export, demo, search, proxy)."""

from segnas.training import build_network, load_trained, make_datasets, model_spec_from_config, train_job

__all__ = ["build_network", "load_trained", "model_spec_from_config", "make_datasets", "train_job"]
