"""Whole-network benchmark: deepnet's DeepConvNet against its NumPy reference, PyTorch (CPU) and
ONNX Runtime, and the BN variant and the small ResNet against the same models in PyTorch.

    python benches/models/compare.py                 # the table (3 rounds, several minutes)
    python benches/models/compare.py --quick         # fewer repetitions, a rough look
    python benches/models/compare.py --scaling       # also throughput vs batch size and threads
    python benches/models/compare.py --threads 1 --steps 50 --rows deepnet-float32,torch-float32
    python benches/models/compare.py --threads 2 --markdown   # the table as docs/performance.md shows it

Run it from the repository root with deepnet installed, or with ``PYTHONPATH=.`` after an
in-place build.  Every row runs in a subprocess of its own (``--row NAME``, which prints
one line of JSON), so that each framework's peak RSS is measured alone.

Per row: a training step (forward + backward + Adam, batch 100) in images/s, inference at
batch 100 in images/s, the latency of one image (ms; 10x as many calls), all as medians of
repeated timings after warm-up; and the peak RSS (ru_maxrss) before the timed steps and after the training
steps, so the memory a training step adds is visible.  Inputs are random MNIST-shaped
images with pixels in [0, 1) and random labels.  "% of FMA peak" is the model's
direct-convolution arithmetic (2 FLOPs per multiply-add of deepnet.nets.describe; a
training step counted as 3 passes: forward, input and weight gradients) per second over
the FMA peak of benches/analysis/gemm_peak.c at the same thread count (compiled and run here with
cc, or given with --fma-peak); Winograd does fewer multiplies than it is credited with.

The peer rows (benches/models/peers.py) hold the book's trained DeepConvNet weights: PyTorch
int8 (FX static quantization, x86), PyTorch bfloat16 autocast, ONNX Runtime float32 and int8
(QDQ static quantization), and deepnet int8 where deepnet has ``deepnet.quantize`` (the default
rows include it only then).  Each one must predict the classes of deepnet's float32 model on
99% of its calibration images (validation images of the MNIST training set) or its row fails.
The int8 and ONNX Runtime rows infer only: their training column is n/a.

deepnet's own further rows: deepnet bfloat16 (DeepConvNet stored in ml_dtypes' bfloat16, as
``deepnet train --dtype bfloat16`` builds it; where ml_dtypes is installed) trains and infers;
deepnet float32 through ``deepnet.compile`` (where deepnet has it: the plan of the BN-folded net,
checked against its predict) infers only.  The default rows leave out the ones that cannot run here.
"""

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

BATCH = 100
LATENCY_CALLS_PER_STEP = 10  # timed batch-1 calls per timed step
SCALING_BATCHES = (1, 8, 32, 100, 256)


@dataclasses.dataclass(frozen=True)
class Row:
    key: str  # the --row / --rows name
    label: str  # what the table shows
    framework: str  # "deepnet" or "torch"
    dtype: str
    backend: str = "cython"  # deepnet's CPU backend; unused for torch
    model: str = "deepconvnet"  # a name of deepnet.recipes.MODEL_NAMES (and torch_deepconvnet.MODELS)
    winograd: str = "auto"  # deepnet.set_winograd's mode; "never": the direct convolutions only
    # The malloc policy of deepnet/_memory.py, which deepnet sets itself: None, each
    # framework's default; True (PyTorch rows), the same thresholds through glibc's MALLOC_*_
    # variables; False (deepnet rows), malloc's defaults (DEEPNET_KEEP_FREED_MEMORY=0).
    keep_freed_memory: bool = None
    autocast: str = None  # a torch dtype name: the PyTorch row runs under CPU autocast to it
    compiled: bool = False  # a deepnet row that infers through deepnet.compile (and does not train)


ROWS = [
    Row("deepnet-float32", "deepnet float32", "deepnet", "float32"),
    Row("deepnet-compiled-float32", "deepnet float32, deepnet.compile", "deepnet", "float32", compiled=True),
    Row("deepnet-float16", "deepnet float16", "deepnet", "float16"),
    Row("deepnet-float64", "deepnet float64", "deepnet", "float64"),
    Row("deepnet-bfloat16", "deepnet bfloat16", "deepnet", "bfloat16"),
    Row("direct-float32", "deepnet float32, no Winograd", "deepnet", "float32", winograd="never"),
    Row("direct-float16", "deepnet float16, no Winograd", "deepnet", "float16", winograd="never"),
    Row("numpy-float32", "deepnet NumPy reference float32", "deepnet", "float32", backend="numpy"),
    Row("torch-float32", "PyTorch float32", "torch", "float32"),
    Row("torch-float64", "PyTorch float64", "torch", "float64"),
    Row("trimmed-float32", "deepnet float32, malloc's defaults", "deepnet", "float32", keep_freed_memory=False),
    Row(
        "torch-kept-float32", "PyTorch float32, deepnet's malloc thresholds", "torch", "float32", keep_freed_memory=True
    ),
    Row("deepnet-bn-float32", "deepnet DeepConvNet-BN float32", "deepnet", "float32", model="deepconvnet-bn"),
    Row("torch-bn-float32", "PyTorch DeepConvNet-BN float32", "torch", "float32", model="deepconvnet-bn"),
    Row("deepnet-resnet-float32", "deepnet ResNet float32", "deepnet", "float32", model="resnet"),
    Row("torch-resnet-float32", "PyTorch ResNet float32", "torch", "float32", model="resnet"),
    Row("deepnet-googlenet-float32", "deepnet GoogLeNet float32", "deepnet", "float32", model="googlenet"),
    Row("torch-googlenet-float32", "PyTorch GoogLeNet float32", "torch", "float32", model="googlenet"),
    # The peers of benches/models/peers.py (DeepConvNet, the book's trained weights).
    Row("torch-bfloat16", "PyTorch bfloat16 autocast", "torch", "float32", autocast="bfloat16"),
    Row("torch-int8", "PyTorch int8 (FX static, x86)", "torch", "int8"),
    Row("ort-float32", "ONNX Runtime float32", "onnxruntime", "float32"),
    Row("ort-int8", "ONNX Runtime int8 (QDQ static)", "onnxruntime", "int8"),
    Row("deepnet-int8", "deepnet int8 (deepnet.quantize)", "deepnet", "int8"),
]
ROWS_BY_KEY = {row.key: row for row in ROWS}


def torch_row_for(row):
    """The key of the PyTorch row that a row is compared with: the same model, in the same
    dtype where PyTorch has that row (bfloat16: its autocast row), else in float32."""
    torch_rows = {
        (r.model, r.dtype if r.autocast is None else r.autocast): r.key
        for r in ROWS
        if r.framework == "torch" and r.keep_freed_memory is None
    }
    return torch_rows.get((row.model, row.dtype), torch_rows[(row.model, "float32")])


REFERENCE = "numpy-float32"  # the reference's DeepConvNet; compared with DeepConvNet rows only


# -- inside a row's subprocess -----------------------------------------------------------


class DeepnetModel:
    """One of deepnet's nets (DeepConvNet by default) with Adam, on one CPU backend and dtype."""

    trains = True  # measure_row times a training step

    def __init__(self, dtype, backend, threads, model="deepconvnet", winograd="auto"):
        import numpy as np

        import deepnet
        from deepnet.optimizers import Adam
        from deepnet.recipes import MODEL_NAMES

        deepnet.set_backend(backend)
        deepnet.set_num_threads(threads)
        deepnet.set_winograd(winograd)
        deepnet.keep_freed_memory()  # as training does: freed activations reused, not faulted back in
        self.np, self.deepnet = np, deepnet
        if dtype == "bfloat16":  # NumPy has no bfloat16: ml_dtypes' (deepnet/backends/bf16.py computes with it)
            import ml_dtypes

            dtype = ml_dtypes.bfloat16
        self.dtype = np.dtype(dtype)
        self.net = MODEL_NAMES[model](self.dtype, 0)
        self.optimizer = Adam(lr=0.001)
        self.rng = np.random.default_rng(0)

    def batch(self, n):
        x = self.rng.random((n, 1, 28, 28), dtype=self.np.float32).astype(self.dtype)
        return x, self.rng.integers(0, 10, size=n)

    def train_mode(self):
        self.inference_net = None  # deepnet takes the mode per call: gradient() trains, predict() infers

    def eval_mode(self):
        # Inference as a deployed model runs it: BN folded into the convolutions before it
        # (a copy, made once; PyTorch's eager eval mode keeps its BN layers).
        from deepnet.layers import BatchNormalization
        from deepnet.nets import fold_batch_norm

        has_bn = any(isinstance(layer, BatchNormalization) for _, layer in self.net.named_layers())
        # Nothing to fold without BN, and fold_batch_norm's copy refuses bfloat16 parameters.
        self.inference_net = self.net if self.dtype.kind != "f" and not has_bn else fold_batch_norm(self.net)

    def train_step(self, x, t):
        grads = self.net.gradient(x, t)
        self.optimizer.update(self.net.params, grads)

    def predict(self, x):
        return self.inference_net.predict(x, train_flg=False)

    def threads(self):
        return self.deepnet.get_num_threads()


def compiled_plan(net, x):
    """deepnet.compile(net), checked: its scores of x equal net.predict(x, train=False)'s (else RuntimeError)."""
    import numpy as np

    import deepnet

    compile_ = getattr(deepnet, "compile", None)
    if compile_ is None:
        raise RuntimeError("this deepnet has no deepnet.compile")
    plan = compile_(net)
    expected = np.asarray(net.predict(x, train=False), np.float64)
    got = np.asarray(plan(x), np.float64)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
        difference = np.max(np.abs(got - expected)) if got.shape == expected.shape else "n/a"
        raise RuntimeError(
            f"deepnet.compile's plan gives other scores than net.predict: shape {got.shape}, expected "
            f"{expected.shape}; largest difference {difference}"
        )
    return plan


class CompiledModel(DeepnetModel):
    """A deepnet net for inference only, BN folded as DeepnetModel infers, through deepnet.compile:
    the timed call is plan(x)."""

    trains = False

    def eval_mode(self):
        super().eval_mode()
        x_check, _ = self.batch(8)
        self.plan = compiled_plan(self.inference_net, x_check)

    def predict(self, x):
        return self.plan(x)


class TorchModel:
    """The same network in PyTorch (benches/models/torch_deepconvnet.py), with Adam.  With
    ``autocast`` (a torch dtype name), DeepConvNet with the book's weights (peers.torch_mirror),
    checked against deepnet's predictions, trained and run under CPU autocast to that dtype."""

    trains = True
    note = None  # a remark for the table's footnotes

    def __init__(self, dtype, threads, model="deepconvnet", autocast=None):
        import torch

        import torch_deepconvnet

        torch.set_num_threads(threads)
        self.torch, self.steps = torch, torch_deepconvnet
        self.dtype = getattr(torch, dtype)
        self.autocast = None if autocast is None else getattr(torch, autocast)
        if self.autocast is None:
            self.model = torch_deepconvnet.MODELS[model](dtype=self.dtype, seed=0)
        else:
            import peers

            if model != "deepconvnet" or self.dtype != torch.float32:
                raise ValueError(f"autocast rows are DeepConvNet float32, got {model} {dtype}")
            self.model = peers.torch_mirror(peers.deepnet_float_net())
            peers.check_torch_mirror(self.model, self.autocast)
            if self.autocast == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
                self.note = "no bfloat16 in oneDNN on this CPU: PyTorch runs its slow reference convolution"
        self.optimizer = torch_deepconvnet.adam(self.model)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.generator = torch.Generator().manual_seed(0)

    def batch(self, n):
        x = self.torch.rand((n, 1, 28, 28), generator=self.generator, dtype=self.dtype)
        return x, self.torch.randint(0, 10, (n,), generator=self.generator)

    def train_mode(self):
        self.model.train()

    def eval_mode(self):
        self.model.eval()

    def train_step(self, x, t):
        self.steps.train_step(self.model, self.optimizer, self.loss_fn, x, t, self.autocast)

    def predict(self, x):
        if self.autocast is not None:
            with self.torch.no_grad(), self.torch.autocast("cpu", dtype=self.autocast):
                return self.model(x)
        with self.torch.no_grad():
            return self.model(x)

    def threads(self):
        return self.torch.get_num_threads()


def make_model(row, threads):
    """The model a row times: compare.py's interface (batch, train_mode/eval_mode, train_step where
    ``trains``, predict, threads)."""
    if row.framework == "onnxruntime" or row.dtype == "int8":
        import peers

        return peers.InferencePeer(row.key, threads)
    if row.framework == "torch":
        return TorchModel(row.dtype, threads, row.model, row.autocast)
    if row.compiled:
        return CompiledModel(row.dtype, row.backend, threads, row.model, row.winograd)
    return DeepnetModel(row.dtype, row.backend, threads, row.model, row.winograd)


def median_seconds(function, warmup, repeats):
    """Median wall time of ``repeats`` calls of function(), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb():
    """Peak resident set size of this process so far, in MB (None where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def measure_row(row, threads, steps, warmup):
    """The table's numbers for one row, as a dict (this runs in the row's subprocess)."""
    model = make_model(row, threads)
    x, t = model.batch(BATCH)
    x1, _ = model.batch(1)
    rss_before = peak_rss_mb()
    train_s = None
    if model.trains:
        model.train_mode()
        train_s = median_seconds(lambda: model.train_step(x, t), warmup, steps)
    rss_peak = peak_rss_mb()  # before inference, so that it is the training step's peak
    model.eval_mode()
    infer_s = median_seconds(lambda: model.predict(x), warmup, steps)
    # A batch-1 call is ~100x shorter than a batch-100 step, and noisier: 10x the calls.
    latency_s = median_seconds(
        lambda: model.predict(x1), LATENCY_CALLS_PER_STEP * warmup, LATENCY_CALLS_PER_STEP * steps
    )
    return {
        "train_ips": None if train_s is None else BATCH / train_s,
        "infer_ips": BATCH / infer_s,
        "latency_ms": 1e3 * latency_s,
        "rss_before_mb": rss_before,
        "rss_peak_mb": rss_peak,
        "threads": model.threads(),
        "steps": steps,
        "warmup": warmup,
        "note": getattr(model, "note", None),
    }


def measure_scaling(row, threads, steps, warmup):
    """Training and inference images/s at each of SCALING_BATCHES (in a subprocess)."""
    model = make_model(row, threads)
    results = []
    for batch in SCALING_BATCHES:
        x, t = model.batch(batch)
        train_s = None
        if model.trains:
            model.train_mode()
            train_s = median_seconds(lambda: model.train_step(x, t), warmup, steps)
        model.eval_mode()
        infer_s = median_seconds(lambda: model.predict(x), warmup, steps)
        train_ips = None if train_s is None else batch / train_s
        results.append({"batch": batch, "train_ips": train_ips, "infer_ips": batch / infer_s})
    return {"threads": model.threads(), "batches": results}


# -- the parent: run the rows, print the tables ------------------------------------------


def torch_installed():
    return importlib.util.find_spec("torch") is not None


def missing(row):
    """Why ``row`` cannot run here ("torch not installed", ...), or None where it can."""
    needed = ["torch"] if row.framework == "torch" or row.autocast else []
    needed += ["torch", "onnx", "onnxruntime"] if row.framework == "onnxruntime" else []
    for package in dict.fromkeys(needed):
        if importlib.util.find_spec(package) is None:
            return f"{package} not installed"
    if row.dtype == "bfloat16" and importlib.util.find_spec("ml_dtypes") is None:
        return "ml_dtypes not installed (NumPy has no bfloat16: pip install 'deepnet-ch8[bf16]')"
    if row.framework == "deepnet" and (row.dtype == "int8" or row.compiled):
        import deepnet

        function = "compile" if row.compiled else "quantize"
        if not hasattr(deepnet, function):
            return f"this deepnet has no deepnet.{function}"
    return None


def default_rows():
    """Every row, less the deepnet rows that cannot run here (int8 without deepnet.quantize, the compiled
    row without deepnet.compile, bfloat16 without ml_dtypes); a missing PyTorch or ONNX Runtime shows as
    its rows' error instead."""
    return [row.key for row in ROWS if not (row.framework == "deepnet" and missing(row))]


def child_environment(row):
    """The environment of a row's subprocess: this one's, with the row's malloc policy."""
    from deepnet import _memory

    env = {k: v for k, v in os.environ.items() if k not in _memory.USER_SETTINGS}
    if row.keep_freed_memory is True:
        env.update(
            MALLOC_MMAP_THRESHOLD_=str(_memory.MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(_memory.TRIM_THRESHOLD)
        )
    elif row.keep_freed_memory is False:
        env["DEEPNET_KEEP_FREED_MEMORY"] = "0"
    return env


def run_child(mode, row, threads, steps, warmup):
    """Run ``compare.py --<mode> row`` in a fresh interpreter; its JSON result, or {"error": ...}."""
    reason = missing(row)
    if reason:
        return {"error": reason}
    print(f"  {row.label}, {threads} thread(s) ...", file=sys.stderr, flush=True)
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"--{mode}",
        row.key,
        "--threads",
        str(threads),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=child_environment(row))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        message = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"error": f"failed: {message}"}
    return json.loads(lines[-1])


def combine_rounds(runs):
    """One row's result from its rounds: medians of the speeds, the largest memory."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    combined = dict(runs[0])
    for key in ("train_ips", "infer_ips", "latency_ms"):
        values = [run[key] for run in runs if run[key] is not None]  # train_ips: None for inference-only rows
        combined[key] = statistics.median(values) if values else None
    for key in ("rss_before_mb", "rss_peak_mb"):
        combined[key] = max(run[key] for run in runs)
    combined["rounds"] = len(runs)
    return combined


def markdown_table(headers, rows):
    """A markdown table with padded columns; the first column left-aligned, the rest right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells):
        padded = [
            str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule] + [line(row) for row in rows])


def command_line(script, argv):
    """The command that ran `script` with `argv`, from the repository root, for a docs table to name."""
    import shlex

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(script))))
    return " ".join(["python", os.path.relpath(os.path.abspath(script), repo)] + [shlex.quote(a) for a in argv])


def ratio(results, key, reference_key, metric):
    """results[key][metric] / results[reference_key][metric] as "1.23x", or "n/a"."""
    mine, reference = results.get(key, {}), results.get(reference_key, {})
    if mine.get(metric) is None or reference.get(metric) is None:
        return "n/a"
    return f"{mine[metric] / reference[metric]:.2f}x"


def mb(value):
    return "n/a" if value is None else f"{value:.0f}"


def number(value, digits=0):
    return "n/a" if value is None else f"{value:.{digits}f}"


def measure_fma_peak(threads):
    """The FMA peak in GFLOP/s of `threads` cores from benches/analysis/gemm_peak.c, compiled here with
    cc; None where it cannot be built or run."""
    import tempfile

    benches = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # benches/, above models/
    with tempfile.TemporaryDirectory() as work:
        binary = os.path.join(work, "gemm_peak")
        try:
            subprocess.run(
                [
                    "cc",
                    "-O3",
                    "-march=native",
                    "-fopenmp",
                    "-I" + os.path.join(benches, "..", "src"),
                    os.path.join(benches, "analysis", "gemm_peak.c"),
                    "-o",
                    binary,
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            done = subprocess.run(
                [binary],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
                env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
            )
        except (OSError, subprocess.SubprocessError):
            return None
    wanted = "FMA peak, 1 core:" if threads == 1 else f"FMA peak, {threads} cores together:"
    for line in done.stdout.splitlines():
        if line.startswith(wanted):
            return float(line.split(":")[1].split()[0])
    return None


def flops_per_image(model):
    """(training, inference) FLOPs per image of a model of deepnet.recipes.MODEL_NAMES."""
    from deepnet.nets import describe
    from deepnet.recipes import MODEL_NAMES

    inference = 2 * describe(MODEL_NAMES[model]("float32", 0))["multiply_adds"]
    return 3 * inference, inference


def peak_fraction(result, model, fma_peak):
    """(train, infer) percentages of the FMA peak, or "n/a"."""
    if fma_peak is None:
        return "n/a", "n/a"
    train, infer = flops_per_image(model)
    return tuple(
        "n/a" if result[metric] is None else f"{100 * result[metric] * flops / 1e9 / fma_peak:.0f}%"
        for metric, flops in (("train_ips", train), ("infer_ips", infer))
    )


def main_table(results, rows, fma_peak=None):
    headers = [
        "configuration",
        "train img/s",
        "infer img/s",
        "latency b=1 ms",
        "RSS before MB",
        "peak RSS train MB (+delta)",
        "train vs torch",
        "infer vs torch",
        "train vs ref",
        "infer vs ref",
        "train % of FMA peak",
        "infer % of FMA peak",
    ]
    lines = []
    for row in rows:
        result = results[row.key]
        if "error" in result:
            lines.append([row.label, result["error"]] + ["-"] * (len(headers) - 2))
            continue
        torch_key = torch_row_for(row)
        reference = REFERENCE if row.model == "deepconvnet" else None
        before, peak = result["rss_before_mb"], result["rss_peak_mb"]
        delta = "" if before is None or peak is None else f" (+{peak - before:.0f})"
        lines.append(
            [
                row.label,
                number(result["train_ips"]),
                number(result["infer_ips"]),
                number(result["latency_ms"], 2),
                mb(before),
                mb(peak) + delta,
                ratio(results, row.key, torch_key, "train_ips"),
                ratio(results, row.key, torch_key, "infer_ips"),
                ratio(results, row.key, reference, "train_ips"),
                ratio(results, row.key, reference, "infer_ips"),
                *peak_fraction(result, row.model, fma_peak),
            ]
        )
    return markdown_table(headers, lines)


def scaling_table(scaling):
    """scaling: {(row, threads): result of measure_scaling or {"error": ...}}."""
    headers = ["configuration", "threads", "mode"] + [f"b={batch}" for batch in SCALING_BATCHES]
    lines = []
    for (row, threads), result in scaling.items():
        if "error" in result:
            lines.append([row.label, threads, "-", result["error"]] + ["-"] * (len(SCALING_BATCHES) - 1))
            continue
        for mode, metric in (("train", "train_ips"), ("infer", "infer_ips")):
            lines.append([row.label, threads, mode] + [number(entry[metric]) for entry in result["batches"]])
    return markdown_table(headers, lines)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    """The 1-minute load average (None where the OS has none): a busy machine skews the timings."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def machine_lines(threads, load_before):
    import numpy as np

    import deepnet

    logical = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = "?"
    torch_version = importlib.metadata.version("torch") if torch_installed() else "not installed"
    ort_installed = importlib.util.find_spec("onnxruntime") is not None
    ort_version = importlib.metadata.version("onnxruntime") if ort_installed else "not installed"
    cfg = deepnet.config()
    build = (
        f"kernels {'compiled' if cfg['kernels compiled'] else 'NOT compiled'}, "
        f"OpenMP {'on' if cfg['OpenMP'] else 'off'}, F16C {'on' if cfg['F16C'] else 'off'}"
    )
    return [
        f"machine: {cpu_model()}, {logical} logical CPUs ({physical} physical, {usable} usable), "
        f"{platform.system()} {platform.machine()}",
        f"versions: python {platform.python_version()}, numpy {np.__version__}, deepnet {deepnet.__version__} "
        f"({build}), torch {torch_version}, onnxruntime {ort_version}",
        f"BLAS (numpy, via threadpoolctl): {cfg['BLAS']}",
        f"threads: {threads} (deepnet kernels and BLAS: deepnet.set_num_threads; PyTorch: torch.set_num_threads; "
        "ONNX Runtime: intra-op threads, 1 inter-op thread, sequential execution)",
    ] + (
        []
        if load_before is None
        else [
            f"load average (1 min): {load_before:.2f} before the runs, {load_average():.2f} after "
            "(a load before the runs means other processes shared the CPUs)"
        ]
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for deepnet and PyTorch (default: deepnet.get_num_threads())"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed repetitions per measurement (default 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed repetitions first (default 3)")
    parser.add_argument("--quick", action="store_true", help="5 timed steps after 1 warm-up, 1 round (unless given)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds over all rows; each number is the median of the rounds (default 3)",
    )
    parser.add_argument("--scaling", action="store_true", help="also print throughput vs batch size and thread count")
    parser.add_argument(
        "--fma-peak",
        type=float,
        default=None,
        metavar="GFLOPS",
        help="the FMA peak at --threads (default: measured by benches/analysis/gemm_peak.c)",
    )
    parser.add_argument(
        "--rows",
        default=None,
        help="comma-separated rows to run (default: all, less deepnet rows this deepnet cannot run): "
        + ", ".join(ROWS_BY_KEY),
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print a block to paste into the docs: the command that produced it, the machine "
        "as a list, then the same tables (GitHub markdown)",
    )
    parser.add_argument("--row", choices=ROWS_BY_KEY, help=argparse.SUPPRESS)  # a subprocess: one row
    parser.add_argument("--scaling-row", choices=ROWS_BY_KEY, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 5 if args.quick else 20
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if args.repeat < 1:
        parser.error("--repeat must be positive")
    if args.steps < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--steps and --threads must be positive, --warmup non-negative")
    if args.rows is None:
        args.rows = "" if args.row or args.scaling_row else ",".join(default_rows())
    unknown = [key for key in args.rows.split(",") if key and key not in ROWS_BY_KEY]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS_BY_KEY)}")
    if not (args.row or args.scaling_row or any(args.rows.split(","))):
        parser.error("--rows names no row")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.row:
        print(json.dumps(measure_row(ROWS_BY_KEY[args.row], args.threads, args.steps, args.warmup)))
        return
    if args.scaling_row:
        print(json.dumps(measure_scaling(ROWS_BY_KEY[args.scaling_row], args.threads, args.steps, args.warmup)))
        return

    import deepnet

    threads = args.threads or deepnet.get_num_threads()
    rows = [ROWS_BY_KEY[key] for key in args.rows.split(",") if key]
    # The NumPy reference is a few times slower: a quarter of the repetitions is enough.
    reference_steps, reference_warmup = max(2, args.steps // 4), min(args.warmup, 1)
    load_before = load_average()
    print("running:", file=sys.stderr)
    # Rounds run the rows in turn, so that a slow spell of a shared machine hits every row
    # alike; each number is the median over the rounds (peak memory: the largest).
    rounds = {row.key: [] for row in rows}
    for _ in range(args.repeat):
        for row in rows:
            steps, warmup = (reference_steps, reference_warmup) if row.backend == "numpy" else (args.steps, args.warmup)
            rounds[row.key].append(run_child("row", row, threads, steps, warmup))
    results = {key: combine_rounds(runs) for key, runs in rounds.items()}
    scaling = {}
    if args.scaling:
        scaling_steps = max(2, args.steps // 2)
        for row in (ROWS_BY_KEY["deepnet-float32"], ROWS_BY_KEY["torch-float32"]):
            for thread_count in sorted({1, 2, threads}):
                scaling[row, thread_count] = run_child("scaling-row", row, thread_count, scaling_steps, 1)

    fma_peak = args.fma_peak if args.fma_peak is not None else measure_fma_peak(threads)
    context = machine_lines(threads, load_before) + [
        "FMA peak: "
        + (
            "unknown (benches/analysis/gemm_peak.c could not be built)"
            if fma_peak is None
            else f"{fma_peak:.1f} GFLOP/s on {threads} thread(s)"
            + (" (given)" if args.fma_peak is not None else " (benches/analysis/gemm_peak.c)")
        ),
        f"{args.repeat} round(s) over the rows, each number the median of the rounds' medians of "
        f"{args.steps} timed steps after {args.warmup} warm-up steps "
        f"(NumPy reference: {reference_steps} after {reference_warmup}); training and inference at batch {BATCH}; "
        "random MNIST-shaped inputs",
    ]
    if args.markdown:
        print(f"Produced by `{command_line(__file__, sys.argv[1:])}`:\n")
        print("\n".join("- " + line for line in context) + "\n")
    else:
        print("\n".join(context) + "\n")
    print(main_table(results, rows, fma_peak))
    print(
        "\nratios: this row's images/s over the reference row's (above 1: faster). \"vs torch\" compares with "
        "PyTorch's same model in float32, float64 rows with PyTorch float64, int8 rows with PyTorch int8, "
        "bfloat16 with PyTorch bfloat16 autocast; "
        '"vs ref" with the deepnet NumPy reference (DeepConvNet rows only). '
        "Peer rows (PyTorch bfloat16, int8, ONNX Runtime) hold the book's trained weights and agree with deepnet's "
        "float32 predictions on at least 99% of their calibration images. "
        "RSS: peak resident memory (ru_maxrss) of the row's own process before the timed steps and after "
        "the training steps."
    )
    for row in rows:
        if results[row.key].get("note"):
            print(f"{row.label}: {results[row.key]['note']}")
    mismatched = [row.label for row in rows if results[row.key].get("threads", threads) != threads]
    if mismatched:
        print(f"warning: {', '.join(mismatched)} ran with another thread count than {threads}")
    if scaling:
        print(
            f"\nthroughput (images/s) vs batch size and threads; median of {max(2, args.steps // 2)} steps "
            "after 1 warm-up step\n"
        )
        print(scaling_table(scaling))


if __name__ == "__main__":
    main()
