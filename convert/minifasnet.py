"""MiniFASNet (minivision Silent-Face-Anti-Spoofing, Apache-2.0): ONNX -> TFLite.

Two passive anti-spoofing nets, each fed a context crop of the face (the MTCNN box
scaled about its centre) resized to 80x80, BGR, 0-255 floats (no normalisation):
MiniFASNetV2 with the box x 2.7, MiniFASNetV1SE with the box x 4.0. Each outputs
three logits; softmax class 1 is "live" (minivision's convention, checked on real
live and attack frames by ``facepi-convert verify``).

They are on no registry: the converter takes the ONNX files as a local source
(default ``../shared/models/minifasnet`` beside the checkout, ``--minifasnet-dir``),
pinned by sha256. The network is rebuilt op by op in TensorFlow from the ONNX
graph's own weights (Conv, depthwise Conv, PRelu, Add, Mul, Relu, Sigmoid,
GlobalAveragePool, Flatten, MatMul, BatchNormalization: the whole op set of both
files; anything else is refused by name), in NHWC, so TFLite needs no transposes;
the input is [N, 80, 80, 3] with a free batch. A converter package (onnx2tf) would
pull in a dozen more pins for the same 11 ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepi.fileio import sha256_file

IMAGE_SIZE = 80
MODEL_ID = "minifasnet"
LICENSE = "Apache-2.0 (minivision-ai/Silent-Face-Anti-Spoofing)"
PREPROCESSING = {"color": "BGR", "mean": 0.0, "scale": 1.0, "layout": "NHWC", "image_size": IMAGE_SIZE,
                 "range": "0-255 float, not normalised", "crop": "minivision context crop of the face box",
                 "live_class": 1, "output": "3 logits; softmax"}


@dataclass(frozen=True)
class Net:
    onnx: str
    tflite: str
    scale: float
    sha256: str


NETS = (
    Net("MiniFASNetV2.onnx", "minifasnet_v2_float32.tflite", 2.7,
        "4eed38f0bde33c9b805942a5f25e42ce1161e2bda545254be622be957727794e"),
    Net("MiniFASNetV1SE.onnx", "minifasnet_v1se_float32.tflite", 4.0,
        "d819a69bac6b9ade2a0f4d9b60b618e1260f7bf3ba1fddff6c5d82131cb1083f"),
)


class MiniFASNetError(Exception):
    pass


def default_source_dir() -> Path:
    """``../shared/models/minifasnet`` beside the checkout (the development machine's copy)."""
    env = os.environ.get("FACEPI_MINIFASNET")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "models" / "minifasnet"


def check_source(directory: Path) -> dict[str, Path]:
    """The pinned ONNX files in ``directory``, or a clear error naming what is missing or wrong."""
    found = {}
    for net in NETS:
        path = directory / net.onnx
        if not path.is_file():
            raise MiniFASNetError(
                f"{path}: missing (MiniFASNet is on no registry: pass --minifasnet-dir with {net.onnx}; "
                f"without it the committed models/{net.tflite} stays as it is)")
        digest = sha256_file(path)
        if digest != net.sha256:
            raise MiniFASNetError(f"{path}: sha256 {digest}, pinned {net.sha256}")
        found[net.onnx] = path
    return found


def _attrs(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def build(onnx_path: Path):
    """A tf.function computing the ONNX graph in NHWC: [N, 80, 80, 3] BGR 0-255 -> [N, 3] logits."""
    import onnx
    import tensorflow as tf
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in graph.initializer}
    (inp,) = [i for i in graph.input if i.name not in weights]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    if dims[1:] != [3, IMAGE_SIZE, IMAGE_SIZE]:
        raise MiniFASNetError(f"{onnx_path}: input {dims}, expected [N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}]")
    output = graph.output[0].name

    def conv(x, node, w, b):
        a = _attrs(node)
        group, (sh, sw) = a.get("group", 1), a.get("strides", [1, 1])
        if a.get("dilations", [1, 1]) != [1, 1]:
            raise MiniFASNetError(f"{node.name}: dilated Conv is not supported")
        top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
        if top or left or bottom or right:
            x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        c_in = x.shape[-1]
        if group == 1:
            y = tf.nn.conv2d(x, np.transpose(w, (2, 3, 1, 0)), [1, sh, sw, 1], "VALID")
        elif group == c_in == w.shape[0] and w.shape[1] == 1:
            y = tf.nn.depthwise_conv2d(x, np.transpose(w, (2, 3, 0, 1)), [1, sh, sw, 1], "VALID")
        else:
            raise MiniFASNetError(f"{node.name}: grouped Conv with group {group} is not supported")
        return y if b is None else tf.nn.bias_add(y, b)

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="input")])
    def forward(x):
        values = {inp.name: x}

        def arg(name):
            return values[name] if name in values else weights[name]

        for node in graph.node:
            op, ins = node.op_type, list(node.input)
            if op == "Conv":
                y = conv(values[ins[0]], node, weights[ins[1]], weights[ins[2]] if len(ins) > 2 else None)
            elif op == "PRelu":
                alpha = weights[ins[1]].reshape(-1)
                v = values[ins[0]]
                y = tf.nn.relu(v) + (-alpha) * tf.nn.relu(-v)  # Keras PReLU's form: fuses to TFLite PRELU
            elif op == "Relu":
                y = tf.nn.relu(values[ins[0]])
            elif op == "Sigmoid":
                y = tf.math.sigmoid(values[ins[0]])
            elif op in ("Add", "Mul"):
                a, b = arg(ins[0]), arg(ins[1])
                if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                    raise MiniFASNetError(f"{node.name}: {op} with a constant is not supported")
                y = a + b if op == "Add" else a * b
            elif op == "GlobalAveragePool":
                y = tf.reduce_mean(values[ins[0]], axis=[1, 2], keepdims=True)
            elif op == "Flatten":
                v = values[ins[0]]
                if _attrs(node).get("axis", 1) != 1:
                    raise MiniFASNetError(f"{node.name}: Flatten axis != 1 is not supported")
                v = tf.transpose(v, [0, 3, 1, 2]) if v.shape.rank == 4 else v  # ONNX flattens NCHW
                y = tf.reshape(v, [-1, int(np.prod(v.shape[1:]))])
            elif op == "MatMul":
                y = tf.matmul(values[ins[0]], weights[ins[1]])
            elif op == "BatchNormalization":
                g, beta, mean, var = (weights[n] for n in ins[1:5])
                scale = g / np.sqrt(var + _attrs(node).get("epsilon", 1e-5))
                y = values[ins[0]] * scale + (beta - mean * scale)
            else:
                raise MiniFASNetError(f"{onnx_path}: op {op} ({node.name}) is not supported by this converter")
            values[node.output[0]] = y
        return tf.identity(values[output], name="logits")

    return forward


def convert(onnx_path: Path) -> bytes:
    """The float32 TFLite file (batch resizable) for one ONNX net."""
    import tensorflow as tf

    fn = build(onnx_path)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    return converter.convert()


def dynamic(float_model: bytes) -> bytes:
    """Dynamic-range variant (int8 Conv weights) with the converter's own pass over the float file."""
    from facepi_convert.mobilefacenet import dynamic_range

    return dynamic_range(float_model)


def convert_into(files: dict[str, Path], staging: Path, versions: dict[str, str], log=print
                 ) -> dict[str, dict[str, Any]]:
    """Both nets, float32 (the default) and dynamic, written to ``staging``; their manifest entries."""
    import onnx
    from facepi_convert.manifest import describe

    entries: dict[str, dict[str, Any]] = {}
    for net in NETS:
        log(f"converting {net.onnx} (context x{net.scale}) ...")
        float_model = convert(files[net.onnx])
        for precision, model in (("float32", float_model), ("dynamic", dynamic(float_model))):
            name = net.tflite.replace("float32", precision)
            (staging / name).write_bytes(model)
            entries[name] = describe(
                model, kind="liveness", model=f"{MODEL_ID}-{net.onnx.removesuffix('.onnx')}",
                precision=precision, context_scale=net.scale, batch_resizable=True, preprocessing=PREPROCESSING,
                source={"file": net.onnx, "sha256": net.sha256, "license": LICENSE,
                        "origin": "minivision-ai/Silent-Face-Anti-Spoofing resources/anti_spoof_models "
                                  "(2.7_80x80_MiniFASNetV2.pth, 4_0_0_80x80_MiniFASNetV1SE.pth) exported to ONNX"},
                converter={**versions, "onnx": onnx.__version__})
    return entries


def onnx_logits(onnx_path: Path, x_nhwc: np.ndarray, threads: int = 2) -> np.ndarray:
    """The original on onnxruntime: NHWC BGR 0-255 crops -> logits."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2)), np.float32)
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
