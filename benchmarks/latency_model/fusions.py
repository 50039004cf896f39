"""Which kernels the runtime actually runs for a network, against the units the latency table times.

    python benchmarks/latency_model/fusions.py [--runtime onnxruntime] [--spaces all] [--size 360x480] [--n 4]
    python benchmarks/latency_model/fusions.py --runtime openvino

For --n random networks of every registered space: exports the network and each of its table units
(``latency_keys``: one ``OpKey`` each) and lets the runtime optimize every graph as segnas runs it,
then counts the kernel types it will execute: ONNX Runtime's optimized graph at ORT_ENABLE_ALL
(``SessionOptions.optimized_model_filepath``), or the OpenVINO CPU plugin's runtime model
(``CompiledModel.get_runtime_model()``, each node's ``layerType``; compiled as
``segnas.cost.backends.openvino_compiled``). The whole network's kernels minus the sum of its units'
are the kernels no table entry times (element-wise glue: residual adds, concatenations, resizes
between units), or entries that time kernels the network fuses away. Saves
results/ort_fusions.json (ONNX Runtime) or results/openvino_fusions.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402

RESULTS = results_dir(__file__)

from segnas.cost.calibration import calibration_archs  # noqa: E402
from segnas.cost.backends import openvino_compiled  # noqa: E402
from segnas.cost.export import export_onnx  # noqa: E402
from segnas.spaces import get_space, list_spaces  # noqa: E402
from segnas.utils import parse_size  # noqa: E402


#: Result name of each runtime's study.
RESULT = {"onnxruntime": "ort_fusions", "openvino": "openvino_fusions"}
#: OpenVINO runtime-model nodes that are not kernels (graph inputs, outputs and constants).
OPENVINO_NOT_KERNELS = {"Input", "Output", "Const", "Parameter", "Result"}


def optimized_nodes(model, shape: tuple[int, int, int, int], threads: int = 2, runtime: str = "onnxruntime") -> Counter:
    """Kernel types ``runtime`` executes for ``model`` after its graph optimizations."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model.eval(), Path(tmp) / "m.onnx", shape)
        if runtime == "openvino":
            nodes = openvino_compiled(path, threads).get_runtime_model().get_ops()
            kinds = (n.get_rt_info()["layerType"].astype(str) for n in nodes)
            return Counter(k for k in kinds if k not in OPENVINO_NOT_KERNELS)
        import onnx
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(Path(tmp) / "opt.onnx")).graph
        return Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in graph.node)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", nargs="+", default=["all"])
    ap.add_argument("--size", default="360x480")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--runtime", choices=sorted(RESULT), default="onnxruntime")
    args = ap.parse_args()
    spaces = list_spaces() if args.spaces == ["all"] else args.spaces
    size = parse_size(args.size)
    unit_cache: dict[str, Counter] = {}
    out = []
    for name in spaces:
        space = get_space(name)
        for i, arch in enumerate(calibration_archs(space, args.n, seed=1)):
            whole = optimized_nodes(space.build(arch, 19), (1, 3, *size), runtime=args.runtime)
            units: Counter = Counter()
            for key in space.latency_keys(arch, 19, size):
                text = key.to_str()
                if text not in unit_cache:
                    unit_cache[text] = optimized_nodes(key.build(), key.input_shape, runtime=args.runtime)
                units.update(unit_cache[text])
            untimed = {k: v for k, v in (whole - units).items()}
            extra = {k: v for k, v in (units - whole).items()}
            out.append({"space": name, "network": i, "whole": dict(whole), "units": dict(units),
                        "in_network_not_in_units": untimed, "in_units_not_in_network": extra})
            print(f"{name} #{i}: {sum(whole.values())} kernels; not timed by any unit: {untimed or 'none'}; "
                  f"timed by units but fused away in the network: {extra or 'none'}", flush=True)
    summary = {}
    for name in spaces:
        rows = [r for r in out if r["space"] == name]
        summary[name] = {"kernels_per_network": float(np.mean([sum(r["whole"].values()) for r in rows])),
                         "untimed_per_network": {k: sum(r["in_network_not_in_units"].get(k, 0) for r in rows) / len(rows)
                                                 for k in sorted({k for r in rows for k in r["in_network_not_in_units"]})},
                         "fused_away_per_network": {k: sum(r["in_units_not_in_network"].get(k, 0) for r in rows) / len(rows)
                                                    for k in sorted({k for r in rows for k in r["in_units_not_in_network"]})}}
    path = save_result(RESULT[args.runtime], {"runtime": args.runtime, "size": args.size, "networks_per_space": args.n,
                                              "summary": summary, "networks": out}, RESULTS)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
