"""The one place that loads a TFLite interpreter, and checks model files against the manifest.

The runtime is ``ai-edge-litert`` and nothing else: the older ``tflite-runtime``
cannot work in a current install (its last aarch64 wheel, 2.14, is built for
numpy 1.x and fails under numpy 2), so facepi offers no fallback that would only
exist in code. Which delegate a model really runs on is read from the
interpreter's execution plan (``backend``), not assumed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepi.fileio import sha256_file

MAX_BATCH = 256
MAX_DEFAULT_THREADS = 4  # a Pi 4/5 has four cores; small models gain little beyond them


def _bundled_models() -> Path:
    """The models shipped with facepi: package data in a wheel, the top-level folder in a checkout."""
    package = Path(__file__).resolve().parent.parent  # facepi/
    for candidate in (package / "models", package.parent / "models"):
        if (candidate / "manifest.json").exists():
            return candidate
    return package / "models"


DEFAULT_MODELS_DIR = _bundled_models()


class ModelError(Exception):
    """A model file or the manifest is missing, corrupt or not what the manifest says."""


def interpreter_class() -> type:
    """ai-edge-litert's Interpreter (a dependency of facepi; a clear error where it is missing)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ModelError(f"the TFLite runtime is missing or broken ({e}): pip install ai-edge-litert") from None
    return Interpreter


def default_threads() -> int:
    """The cores this process may run on (systemd's CPUAffinity= and cgroups included), at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_DEFAULT_THREADS))


def resolve_threads(threads: int) -> int:
    """``threads`` if set (> 0), else the machine's default."""
    return threads if threads > 0 else default_threads()


def models_dir() -> Path:
    return Path(os.environ.get("FACEPI_MODELS", DEFAULT_MODELS_DIR))


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: what a model file is and how to feed it."""

    file: str
    path: Path
    entry: dict[str, Any] = field(repr=False)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.entry["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.entry["outputs"]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.entry.get("preprocessing", {})


def load_manifest(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    directory = Path(directory) if directory is not None else models_dir()
    path = directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: no model manifest; run facepi-convert to create the models") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise ModelError(f"{path}: expected an object with a 'models' object")
    return manifest


def model_spec(file: str, directory: str | os.PathLike[str] | None = None) -> ModelSpec:
    directory = Path(directory) if directory is not None else models_dir()
    manifest = load_manifest(directory)
    entry = manifest["models"].get(file)
    if entry is None:
        known = ", ".join(sorted(manifest["models"])) or "none"
        raise ModelError(f"{directory / 'manifest.json'}: no model '{file}' (known: {known})")
    return ModelSpec(file=file, path=directory / file, entry=entry)


def load_model_bytes(spec: ModelSpec) -> bytes:
    """Read a model file and check its size and sha256 against the manifest."""
    path = spec.path
    if not path.exists():
        raise ModelError(
            f"{path}: listed in the manifest but missing; produce it with "
            f"'facepi-convert' (it needs the convert extra: pip install 'facepi[convert]')"
        )
    size = path.stat().st_size
    if size != spec.entry["size"]:
        raise ModelError(f"{path}: {size} bytes, the manifest expects {spec.entry['size']}")
    digest = sha256_file(path)
    if digest != spec.entry["sha256"]:
        raise ModelError(f"{path}: sha256 {digest}, the manifest expects {spec.entry['sha256']}")
    return path.read_bytes()


def make_interpreter(model: bytes, num_threads: int = 0) -> Any:
    """An interpreter on ``num_threads`` threads (0: ``default_threads()``)."""
    cls = interpreter_class()
    return cls(model_content=model, num_threads=resolve_threads(num_threads))


_XNNPACK_NOTE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
_quiet_done = False


def allocate(interpreter: Any) -> None:
    """``allocate_tensors()``, without the line LiteRT's C++ prints once per process on the first one
    ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."): every facepi command printed it, and
    ``backend()`` says the same in facepi's own log. Only for that first call, file descriptor 2 goes to a
    temporary file; whatever else was written there meanwhile is passed on to stderr unchanged."""
    global _quiet_done
    if _quiet_done:
        interpreter.allocate_tensors()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            interpreter.allocate_tensors()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read()
            _quiet_done = True
            rest = text.replace(_XNNPACK_NOTE, b"", 1)
            if rest:
                os.write(2, rest)


def backend(interpreter: Any, threads: int) -> dict[str, Any]:
    """What an allocated interpreter really runs on: runtime, delegate, threads.

    A delegate that took over part of the graph appears as DELEGATE nodes in the
    interpreter's node list; ai-edge-litert's default resolver applies XNNPACK (and
    no other) by itself, so DELEGATE nodes mean XNNPACK and none mean the reference
    CPU kernels (XNNPACK refused the graph or is missing from the build).
    """
    ops = interpreter._get_ops_details()  # the only API that exposes the delegated nodes
    partitions = sum(1 for op in ops if op["op_name"] == "DELEGATE")
    try:
        version = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return {"runtime": f"ai-edge-litert {version}", "delegate": "XNNPACK" if partitions else "none",
            "partitions": partitions, "ops": len(ops) - partitions, "threads": threads}


def describe(info: dict[str, Any]) -> str:
    where = f"XNNPACK ({info['partitions']} partition(s))" if info["partitions"] else "reference kernels (no XNNPACK)"
    return f"{info['runtime']}, {where}, {info['threads']} thread(s)"


def check_tensors(interpreter: Any, spec: ModelSpec) -> None:
    """Compare the interpreter's input/output names and shapes with the manifest."""
    for kind, details in (("input", interpreter.get_input_details()),
                          ("output", interpreter.get_output_details())):
        expected = spec.inputs if kind == "input" else spec.outputs
        got = [(d["name"], list(d["shape"])) for d in details]
        want = [(t["name"], list(t["shape"])) for t in expected]
        if sorted(got) != sorted(want):
            raise ModelError(f"{spec.path}: {kind} tensors {got}, the manifest expects {want}")


def _position(details: list[dict[str, Any]], name: str) -> int:
    for i, d in enumerate(details):
        if d["name"] == name:
            return i
    raise ModelError(f"no tensor named {name!r} (have {[d['name'] for d in details]})")


def resident_bytes() -> int:
    """This process's resident memory now (Linux), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Model:
    """A checked model file with one allocated interpreter per input shape, bounded in bytes.

    Re-allocating an interpreter is costly (it dominated a PNet pyramid when done
    per frame), so every shape seen gets its own interpreter. A camera's frame
    size is fixed, so its few shapes stay cached. A folder of photos of all sizes
    brings new shapes with every photo: the least recently used interpreters are
    dropped once the cached ones hold more than ``max_cached_bytes`` or number more
    than ``max_cached``, so memory stays bounded whatever is fed in. What an
    interpreter holds is measured, not guessed: the growth of the process's resident
    memory over its allocation and first invoke (XNNPACK's buffers are invisible in
    the tensor list; for PNet they are ~10x the tensors' bytes).
    Outputs are returned by role where the manifest names one, else by tensor name.
    """

    spec: ModelSpec
    model: bytes = field(repr=False)
    threads: int = 0  # 0: default_threads()
    max_cached: int = 32
    max_cached_bytes: int = 96 << 20
    cache: OrderedDict[tuple[int, ...], list[Any]] = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def load(cls, file: str, directory: str | os.PathLike[str] | None = None, threads: int = 0) -> Model:
        spec = model_spec(file, directory)
        return cls(spec, load_model_bytes(spec), resolve_threads(threads))

    def backend(self) -> dict[str, Any]:
        """Runtime, delegate and threads of this model's interpreters (one is made if none is yet)."""
        if self.cache:
            it = next(iter(self.cache.values()))[0]
        else:
            it = make_interpreter(self.model, self.threads)
            allocate(it)
        return backend(it, resolve_threads(self.threads))

    @property
    def cached_bytes(self) -> int:
        return sum(entry[3] for entry in self.cache.values())

    def interpreter(self, shape: tuple[int, ...]) -> tuple[Any, dict[str, Any], dict[str, dict[str, Any]]]:
        """(interpreter, input details, output details by role) for this input shape."""
        return self._entry(shape)[:3]

    def _entry(self, shape: tuple[int, ...]) -> list[Any]:
        """[interpreter, input details, outputs by role, bytes held (-1: not yet measured), rss at creation]."""
        hit = self.cache.get(shape)
        if hit is not None:
            self.cache.move_to_end(shape)
        else:
            before = resident_bytes()
            it = make_interpreter(self.model, self.threads)
            check_tensors(it, self.spec)
            inp = it.get_input_details()[0]
            if tuple(inp["shape"]) != shape:
                it.resize_tensor_input(inp["index"], list(shape), strict=False)
            allocate(it)
            details = it.get_output_details()
            outs = {o.get("role", o["name"]): details[_position(details, o["name"])] for o in self.spec.outputs}
            hit = [it, it.get_input_details()[0], outs, -1, before]
            self.cache[shape] = hit
        return hit

    def _evict(self) -> None:
        while len(self.cache) > 1 and (len(self.cache) > self.max_cached
                                       or self.cached_bytes > self.max_cached_bytes):
            self.cache.popitem(last=False)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Float in, float out, also for full-integer models (their int8 I/O is (de)quantized here)."""
        entry = self._entry(tuple(x.shape))
        it, inp, outs = entry[:3]
        it.set_tensor(inp["index"], quantize_input(inp, x))
        it.invoke()
        result = {role: dequantize_output(d, it.get_tensor(d["index"])) for role, d in outs.items()}
        if entry[3] < 0:  # first invoke: what did this interpreter add to the process?
            entry[3] = max(0, resident_bytes() - entry[4] - sum(v.nbytes for v in result.values()))
            self._evict()
        return result

    def run_batched(self, x: np.ndarray, max_batch: int = MAX_BATCH) -> dict[str, np.ndarray]:
        """Run (N, ...) inputs in power-of-two batches, so few interpreters are ever made."""
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(x), max_batch):
            chunk = x[start:start + max_batch]
            n = len(chunk)
            bucket = 1 << (n - 1).bit_length()
            if bucket != n:
                chunk = np.concatenate([chunk, np.zeros((bucket - n, *chunk.shape[1:]), chunk.dtype)])
            out = self.run(chunk)
            parts.append({k: v[:n].copy() for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def quantize_input(d: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """x for the input tensor described by ``d`` (an interpreter's input details)."""
    if d["dtype"] in (np.int8, np.uint8):
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])
    return x


def dequantize_output(d: dict[str, Any], y: np.ndarray) -> np.ndarray:
    """y of the output tensor described by ``d`` as float."""
    if d["dtype"] in (np.int8, np.uint8):
        scale, zero = d["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y
