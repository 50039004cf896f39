"""Cost of a network: parameters, FLOPs, latency on real runtimes, latency tables and prediction,
export."""

from segnas.cost.backends import BACKENDS
from segnas.cost.export import check_parity, export_onnx, export_torchscript
from segnas.cost.flops import FlopsResult, count_flops
from segnas.cost.latency import HostProbe, LatencyResult, measure_latency
from segnas.cost.latency_model import LatencyModel
from segnas.cost.params import count_parameters
from segnas.cost.predictor import Prediction, predict_latency
from segnas.cost.table import LatencyTable

__all__ = ["BACKENDS", "check_parity", "export_onnx", "export_torchscript", "FlopsResult", "count_flops",
           "HostProbe", "LatencyResult", "LatencyModel", "measure_latency", "count_parameters", "Prediction", "predict_latency", "LatencyTable"]
