"""A gallery joined to the face pipeline it was made with: embeddings -> names.

The gallery's own settings (embedder, alignment, margin) choose the pipeline, so a
gallery is never read with a model other than the one it was enrolled with.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facepi.identity import classify
from facepi.identity.gallery import Gallery, wrong_model
from facepi.identity.store import load as load_gallery
from facepi.vision.detect import DetectorParams
from facepi.vision.faces import FacePipeline
from facepi.vision.photos import load_pipeline


class Recognizer:
    """A gallery, its classifier and the matching pipeline: embeddings -> predictions."""

    def __init__(self, gallery_path: Path, models_dir: str | os.PathLike[str] | None = None,
                 embedder: str | None = None, threads: int = 0,
                 detector_params: DetectorParams | None = None, pipeline: FacePipeline | None = None,
                 embed_batch: int = 16, gallery: Gallery | None = None) -> None:
        # read once: its settings choose the pipeline (``gallery``: one given instead, e.g. an empty one)
        self.gallery = gallery if gallery is not None else load_gallery(gallery_path)
        meta = self.gallery.meta
        self.pipeline = pipeline or load_pipeline(
            models_dir, embedder or meta.get("embedder"), threads, meta.get("alignment"),
            meta.get("margin"), detector_params, embed_batch)
        if self.gallery.model != self.pipeline.embedder.model_id:
            raise wrong_model(gallery_path, self.gallery.model, self.pipeline.embedder.model_id)
        self.classifier = classify.Classifier(self.gallery, meta.get("classifier", "centroid"),
                                              float(meta["threshold"]))

    def predict(self, embeddings: np.ndarray) -> list[classify.Prediction]:
        return self.classifier.predict(embeddings)
