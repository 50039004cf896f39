"""Inference runtimes behind one interface, for latency measurement and output agreement.

``prepare(name, model, input_shape, threads)`` returns a callable that runs one inference on a
NumPy batch and returns NumPy logits. Backends:
- ``eager``: PyTorch inference mode (``eager-cl``: channels-last memory format);
- ``torchscript``: traced and frozen;
- ``onnxruntime``: CPU execution provider (CUDA / TensorRT providers with ``device="cuda"``);
- ``openvino``: CPU plugin with f32 inference precision forced, so results compare with the others.
Threads are pinned per backend and restored afterwards for PyTorch.
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from segnas.cost.export import export_onnx, _quiet_export
from segnas.errors import SegnasError

Runner = Callable[[np.ndarray], np.ndarray]
BACKENDS = ("eager", "eager-cl", "torchscript", "onnxruntime", "openvino")


def _torch_runner(model: nn.Module, channels_last: bool, device: str) -> Runner:
    if channels_last or device != "cpu":  # .to() works in place: never change the caller's model
        model = copy.deepcopy(model).to(device)
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).to(device)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = model(t)
        if device != "cpu":
            torch.cuda.synchronize()
        return out.float().cpu().numpy()

    return run


def _torchscript_runner(model: nn.Module, input_shape: tuple[int, ...], device: str) -> Runner:
    with torch.no_grad(), _quiet_export():
        traced = torch.jit.trace(copy.deepcopy(model).eval().to(device), torch.randn(*input_shape, device=device))
        traced = torch.jit.freeze(traced)  # optimize_for_inference (MKLDNN) breaks uneven adaptive pooling
    return _torch_runner(traced, False, device)


def onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    available = [p for p in wanted if p in ort.get_available_providers()]
    if not available:
        raise SegnasError(f"device: {device!r} asked for, but ONNX Runtime has no CUDA/TensorRT provider here")
    return available + ["CPUExecutionProvider"]


def onnxruntime_runner(onnx_path: Path, threads: int, device: str) -> Runner:
    """A function running the ONNX file on ONNX Runtime as segnas measures it (all graph optimizations,
    ``threads`` intra-op threads, sequential): its one input in, its first output back."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), opts, providers=onnx_providers(device))
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def check_backend(backend: str, field: str = "backend") -> None:
    """Refuse, naming ``field``, a runtime that is not one of ``BACKENDS`` or is not installed, before
    any work (OpenVINO is an optional extra)."""
    if backend not in BACKENDS:
        raise SegnasError(f"{field}: unknown {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        raise SegnasError(f"{field}: openvino is not installed (pip install 'segnas[openvino]')")


def openvino_compiled(onnx_path: Path, threads: int) -> Any:
    """The OpenVINO CPU plugin's compiled model of an ONNX file, as segnas measures it (f32
    inference precision forced, latency hint, one stream, ``threads`` threads)."""
    try:
        import openvino as ov
    except ImportError:
        raise SegnasError("backend: openvino is not installed (pip install 'segnas[openvino]')") from None
    return ov.Core().compile_model(str(onnx_path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})


def _openvino_runner(onnx_path: Path, threads: int) -> Runner:
    compiled = openvino_compiled(onnx_path, threads)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[compiled.output(0)].copy()


def prepare(backend: str, model: nn.Module, input_shape: tuple[int, int, int, int], threads: int,
            device: str = "cpu", workdir: str | Path | None = None) -> Runner:
    """A runner of ``model`` on ``backend`` for inputs of ``input_shape`` using ``threads`` threads.

    For PyTorch backends the caller pins ``torch.set_num_threads`` (see ``pinned_threads``)."""
    if backend not in BACKENDS:
        raise SegnasError(f"backend: unknown {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("eager", "eager-cl"):
        return _torch_runner(model, backend == "eager-cl", device)
    if backend == "torchscript":
        return _torchscript_runner(model, input_shape, device)
    if backend == "openvino" and device != "cpu":
        raise SegnasError("backend: openvino is measured on CPU only here")
    with tempfile.TemporaryDirectory(prefix="segnas-onnx-") as tmp:  # the runtimes load the file fully
        onnx_path = export_onnx(model, Path(workdir or tmp) / "model.onnx", input_shape)
        if backend == "onnxruntime":
            return onnxruntime_runner(onnx_path, threads, device)
        return _openvino_runner(onnx_path, threads)


class pinned_threads:
    """Context manager: torch intra-op threads set to ``n`` inside, restored after."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> "pinned_threads":
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.previous)
