"""INT8 deployment: an exported ONNX graph quantized statically with ONNX Runtime, and an ONNX file
run as a network so that it is scored like any other.

Static quantization (``onnxruntime.quantization.quantize_static``) in the QDQ format: weights int8
per output channel, activations uint8 with ranges observed (min/max) on calibration images. On x86
CPUs ONNX Runtime runs the QDQ pairs as integer kernels (u8 x s8: VNNI where the CPU has it, AVX2
otherwise). What it costs in accuracy depends on the network and its data, so every quantized file
is scored against its float graph before it is kept (``segnas export --int8``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from segnas.cost.backends import onnxruntime_runner
from segnas.cost.export import set_metadata
from segnas.errors import SegnasError
from segnas.utils import atomic_write

#: The operators of a quantized graph (QDQ pairs, or the operator-oriented format's integer kernels).
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                           "MatMulInteger", "DynamicQuantizeLinear"})

#: What a quantized export's ``precision`` metadata says.
INT8_PRECISION = ("int8: static quantization (ONNX Runtime, QDQ), weights int8 per channel, activations uint8 "
                  "calibrated (min/max)")


def onnx_precision(model: Any) -> str:
    """``"int8"`` for an ONNX model (a ModelProto) with quantized operators, else ``"fp32"``."""
    return "int8" if any(node.op_type in QUANTIZED_OPS for node in model.graph.node) else "fp32"


def quantization_parameters(model: Any) -> set[str]:
    """The names of an ONNX model's quantization scales and zero points (inputs of its QDQ pairs):
    initializers that are not weights."""
    return {name for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
            for name in node.input[1:]}


def quantize_onnx(source: Path, out: Path, calibration: Iterable[np.ndarray],
                  metadata: Mapping[str, str] | None = None) -> None:
    """Write ``source`` (a float ONNX graph with one input) statically quantized to ``out``, its
    activation ranges observed on the ``calibration`` inputs (float32 NCHW arrays, as the graph
    takes them), with ``metadata`` as the file's metadata properties (those of ``source`` kept)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load(str(source), load_external_data=False)
    name = proto.graph.input[0].name
    kept = {p.key: p.value for p in proto.metadata_props}
    inputs = iter(calibration)
    first = next(inputs, None)
    if first is None:
        raise SegnasError("int8 calibration: no calibration images")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.inputs = itertools.chain([first], inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.inputs, None)
            return None if x is None else {name: np.ascontiguousarray(x, dtype=np.float32)}

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="segnas-quantize-") as work, _quiet_root_logger():
            prepared = Path(work) / "prepared.onnx"  # shapes inferred and the graph optimized, as ORT advises
            quant_pre_process(str(source), str(prepared))
            quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={"CalibTensorRangeSymmetric": False})
        quantized = onnx.load(str(tmp))
        set_metadata(quantized, {**kept, **(metadata or {})})
        onnx.save(quantized, str(tmp))

    atomic_write(out, write)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs its notes through the root logger (``WARNING:root:Axis 1 is
    out-of-range ...`` for a weight it quantizes per tensor instead): kept off the user's terminal,
    and the root logger left as it was (a handler there, none added: ``logging.warning`` would add
    one to a root logger without)."""
    root, quiet = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)


class OnnxNetwork(nn.Module):
    """An ONNX file run on ONNX Runtime behind ``nn.Module``'s call: images (N x 3 x H x W, float)
    in, logits out as a tensor, one image at a time where the graph's batch is fixed. Inference
    only (no gradients, no parameters): it lets ``segnas.engine.evaluate`` score an exported file."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
        self.path, self.fixed_batch = Path(path), batch.HasField("dim_value")
        self.run = onnxruntime_runner(Path(path), threads, "cpu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().cpu().float().numpy()
        if self.fixed_batch:
            return torch.from_numpy(np.concatenate([self.run(x[i:i + 1]) for i in range(len(x))]))
        return torch.from_numpy(self.run(x))
