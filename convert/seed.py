"""The seed's MTCNN on TensorFlow, used as the reference (never copied into facepi).

``detect_face.py`` is TF1 code. It is imported from the downloaded, sha256-pinned
``facenet==1.0.5`` wheel with a small shim: while it is imported and its graph
built, ``tensorflow`` means ``tensorflow.compat.v1`` with v1 tensor shapes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np


def _import_detect_face(align_dir: Path) -> ModuleType:
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_v2_tensorshape()  # the seed reads .value off dimensions
    spec = importlib.util.spec_from_file_location("seed_detect_face", align_dir / "detect_face.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(align_dir / "detect_face.py")
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules["tensorflow"]
    sys.modules["tensorflow"] = v1
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules["tensorflow"] = saved
    return module


class SeedMTCNN:
    """``detect(rgb) -> (boxes (N,5), landmarks (N,5,2))`` via the seed's detect_face."""

    def __init__(self, align_dir: Path, weights_dir: Path | None = None, threads: int = 2,
                 minsize: int = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709) -> None:
        import tensorflow as tf

        self.df = _import_detect_face(align_dir)
        self.params = (minsize, list(thresholds), factor)
        self.graph = tf.Graph()
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                          inter_op_parallelism_threads=1)
        self.sess = tf.compat.v1.Session(graph=self.graph, config=config)
        with self.graph.as_default(), self.sess.as_default():
            self.nets = self.df.create_mtcnn(self.sess, str(weights_dir or align_dir))

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        minsize, thresholds, factor = self.params
        with self.graph.as_default():
            boxes, points = self.df.detect_face(rgb, minsize, *self.nets, thresholds, factor)
        points = np.asarray(points).reshape(10, -1) if len(boxes) else np.empty((10, 0))
        return np.asarray(boxes).reshape(-1, 5), np.stack([points[0:5].T, points[5:10].T], axis=2)
