"""Export to ONNX and TorchScript, with a parity check against eager PyTorch."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.utils import atomic_write


@contextlib.contextmanager
def _silenced_fds():
    """Send file descriptors 1 and 2 to /dev/null (the TorchScript exporter dumps whole graphs
    from C++ when it gives up, which Python-level redirection cannot catch)."""
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@contextlib.contextmanager
def _quiet_export():
    """Silence the exporters' deprecation warnings and progress chatter."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


#: The names of a dynamic export's symbolic dimensions (input ``image`` and output ``logits``, NCHW).
DYNAMIC_DIMS = {0: "batch", 2: "height", 3: "width"}


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int, int], dynamic: bool = False,
                opset: int = 17, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` (eval mode) as ONNX with input ``image`` and output ``logits``, and
    ``metadata`` as the file's metadata properties.

    Static shapes use the TorchScript-based exporter (fast: latency tables export hundreds of small
    ops) and fall back to the torch.export-based one for what it cannot express (e.g. adaptive
    pooling to sizes that do not divide the input). ``dynamic`` makes batch, H and W symbolic
    (named ``DYNAMIC_DIMS``) and always uses the torch.export-based exporter (opset 18 at least).
    """
    path = Path(path)
    model = model.eval()
    x = torch.randn(*input_shape)
    names = {"input_names": ["image"], "output_names": ["logits"]}

    def legacy(tmp: Path) -> None:
        torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=opset, do_constant_folding=True, **names)
        _finish_onnx(tmp, False, metadata)

    def modern(tmp: Path) -> None:
        kwargs = {"dynamic_shapes": (DYNAMIC_DIMS,)} if dynamic else {}
        example = torch.randn(max(2, input_shape[0]), *input_shape[1:]) if dynamic else x  # size 1 would specialize
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=max(opset, 18), **names, **kwargs)
        program.save(str(tmp))
        _finish_onnx(tmp, dynamic, metadata)

    with torch.no_grad(), _quiet_export():
        if dynamic:
            atomic_write(path, modern)
        else:
            try:
                with _silenced_fds():
                    atomic_write(path, legacy)
            except Exception:  # the legacy exporter lacks some ops; the torch.export one has them
                atomic_write(path, modern)
    return path


def _finish_onnx(file: Path, dynamic: bool, metadata: Mapping[str, str] | None) -> None:
    """Name a dynamic export's output dimensions as its input's (the exporter writes expressions
    such as ``Min(height, 32*((height + 31)//32))``, equal to them) and add ``metadata``."""
    if not dynamic and not metadata:
        return
    import onnx

    proto = onnx.load(str(file))
    if dynamic:
        dims = proto.graph.output[0].type.tensor_type.shape.dim
        if len(dims) == 4:
            for i, name in DYNAMIC_DIMS.items():
                dims[i].dim_param = name
    set_metadata(proto, metadata or {})
    onnx.save(proto, str(file))


def set_metadata(proto: Any, metadata: Mapping[str, str]) -> None:
    """Set ``metadata`` as metadata properties of ``proto`` (an ONNX ModelProto), replacing those of
    the same keys."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def set_onnx_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """``set_metadata`` on the ONNX file ``path``, rewritten in place atomically."""
    import onnx

    proto = onnx.load(str(path))
    atomic_write(path, lambda tmp: (set_metadata(proto, metadata), onnx.save(proto, str(tmp))))


class FixedInputSize(nn.Module):
    """A traced network that refuses inputs of another height and width than it was traced at:
    tracing fixes that size into the graph (padding to the stride, upsampling, cropping), so
    another size would run and give wrong logits. The batch size may vary."""

    def __init__(self, traced: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.net, self.height, self.width = traced, height, width
        self.message = (f"this TorchScript file takes inputs of {height}x{width}, the size it was exported at "
                        "(export again with --size, or as ONNX with --dynamic for any size)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != self.height or x.shape[3] != self.width:
            raise RuntimeError(self.message)
        return self.net(x)


#: The file in a TorchScript export that holds its ``metadata`` (JSON; ``torch.jit.load(path,
#: _extra_files={TORCHSCRIPT_METADATA: ""})`` reads it).
TORCHSCRIPT_METADATA = "segnas.json"


def export_torchscript(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int, int],
                       metadata: Mapping[str, str] | None = None) -> Path:
    """Trace ``model`` at ``input_shape``, guard its input size (``FixedInputSize``), freeze and save,
    with ``metadata`` as the archive's ``TORCHSCRIPT_METADATA`` file."""
    path = Path(path)
    with torch.no_grad(), _quiet_export():
        traced = torch.jit.trace(model.eval(), torch.randn(*input_shape))
        guarded = torch.jit.freeze(torch.jit.script(FixedInputSize(traced, *input_shape[2:]).eval()))

    def save(tmp: Path) -> None:  # (through memory: the archive's folder is then "archive", not the temporary name)
        buffer = io.BytesIO()
        torch.jit.save(guarded, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(dict(metadata or {}))})
        tmp.write_bytes(buffer.getvalue())

    atomic_write(path, save)
    return path


@dataclass
class ParityResult:
    backend: str
    input_shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def check_parity(model: nn.Module, exported: str | Path, input_shape: tuple[int, int, int, int],
                 tolerance: float = 1e-3, seed: int = 0) -> ParityResult:
    """Max absolute difference between eager PyTorch and an exported file (.onnx via ONNX Runtime,
    .pt/.ts via TorchScript) on one random input."""
    exported = Path(exported)
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = model.eval()(x).float().numpy()
    if exported.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        backend = "onnxruntime"
    else:
        with torch.inference_mode():
            out = torch.jit.load(str(exported))(x).float().numpy()
        backend = "torchscript"
    if out.shape != ref.shape:
        raise SegnasError(f"{exported}: output shape {out.shape} differs from PyTorch's {ref.shape}")
    return ParityResult(backend, tuple(input_shape), float(np.abs(out - ref).max()), tolerance)
