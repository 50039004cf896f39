"""Training a network from settings in a run directory (below search and evaluators, above the
engine): the network from a zoo name or an architecture file, the datasets, the run directory."""

from segnas.training.job import load_teacher, make_datasets, train_job
from segnas.training.models import build_network, load_trained, model_spec_from_config, resolve_model
from segnas.training.start import RESUMABLE, check_resumable, open_run, resumable_values, start_job

__all__ = ["RESUMABLE", "build_network", "check_resumable", "load_teacher", "load_trained", "make_datasets",
           "model_spec_from_config", "open_run", "resolve_model", "resumable_values", "start_job", "train_job"]
