"""Describe converted files for ``models/manifest.json``: the on-device code reads this, never guesses."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from facepi.vision import runtime

MTCNN_PREPROCESSING = {"color": "RGB", "mean": 127.5, "scale": 0.0078125, "layout": "NHWC",
                       "note": "seed's transposed-image convention folded into the weights"}
FACENET_PREPROCESSING = {"color": "RGB", "mean": 127.5, "scale": 0.0078125, "layout": "NHWC",
                         "standardisation": "fixed (x - 127.5) / 128, not per-image prewhitening",
                         "image_size": 160, "alignment": "crop", "margin": 32,
                         "face_fraction": 0.8, "landmark_template": "arcface"}
MOBILEFACENET_PREPROCESSING = {"color": "RGB", "mean": 127.5, "scale": 0.0078125, "layout": "NHWC",
                               "standardisation": "fixed (x - 127.5) / 128", "image_size": 112,
                               "alignment": "landmarks", "landmark_template": "arcface", "face_fraction": 1.0,
                               "margin": 0}


def _tensors(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": d["name"], "shape": [int(s) for s in d["shape"]],
             "dtype": np.dtype(d["dtype"]).name} for d in details]


def describe(tflite: bytes, **fields: Any) -> dict[str, Any]:
    it = runtime.make_interpreter(tflite, 1)
    return {"sha256": hashlib.sha256(tflite).hexdigest(), "size": len(tflite), **fields,
            "inputs": _tensors(it.get_input_details()), "outputs": _tensors(it.get_output_details())}


def assign_mtcnn_roles(net: str, outputs: list[dict[str, Any]]) -> None:
    """Name each MTCNN output by its shape (the converter's tensor names are just Identity_N)."""
    for o in outputs:
        rank, last = len(o["shape"]), o["shape"][-1]
        if net == "pnet":
            o["role"] = "prob" if rank == 3 else "reg"
        elif rank == 1:
            o["role"] = "prob"
        else:
            o["role"] = {4: "reg", 10: "landmarks"}[last]
    roles = sorted(o["role"] for o in outputs)
    expected = sorted({"pnet": ["prob", "reg"], "rnet": ["prob", "reg"],
                       "onet": ["landmarks", "prob", "reg"]}[net])
    if roles != expected:
        raise ValueError(f"{net}: converted outputs {outputs} do not have roles {expected}")
