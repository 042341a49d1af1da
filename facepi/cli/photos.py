"""The seed's verbs and the measuring tools: models, detect, align, train, classify, evaluate,
validate-pairs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facepi.cli import shared
from facepi.vision import runtime


def models(args: argparse.Namespace) -> int:
    """Each model: present, intact (size + sha256), and what it really runs on."""
    directory = Path(args.models or runtime.models_dir())
    manifest = runtime.load_manifest(directory)
    rows, failed = [], 0
    for name, entry in manifest["models"].items():
        row = {"file": name, "kind": entry.get("kind", "?"), "precision": entry.get("precision", "?"),
               "mb": round(entry["size"] / 1e6, 1)}
        if not (directory / name).exists():
            row["status"] = "missing (run facepi-convert)"
        else:
            try:
                row |= runtime.Model.load(name, directory, args.threads).backend()
                row["status"] = "ok"
            except (runtime.ModelError, ValueError, RuntimeError) as e:
                row["status"], failed = f"broken: {e}", failed + 1
        rows.append(row)
    if args.json:
        print(json.dumps({"dir": str(directory), "default_embedder": manifest.get("default_embedder"),
                          "models": rows}, indent=1))
        return 1 if failed else 0
    print(f"models in {directory}")
    for r in rows:
        runs_on = f"  {runtime.describe(r)}" if r["status"] == "ok" else f"  {r['status']}"
        print(f"{r['file']:<30}{r['kind']:<10}{r['precision']:<9}{r['mb']:>7.1f} MB{runs_on}")
    print(f"default embedder: {manifest.get('default_embedder')}")
    return 1 if failed else 0


def detect(args: argparse.Namespace) -> int:
    from facepi.vision.detect import Detector, DetectorParams
    from facepi.vision.faces import DECODE_PIXELS, detect_bounded
    from facepi.vision.images import ImageError, read_photo

    detector = Detector(args.models, DetectorParams(minsize=args.minsize), threads=args.threads)
    failed = 0
    for path in args.images:
        try:
            rgb, scale = read_photo(path, DECODE_PIXELS)
        except ImageError as e:
            print(f"facepi: {e}", file=sys.stderr)
            failed += 1
            continue
        boxes, points = detect_bounded(detector, rgb, scale=scale)  # in the upright stored photo
        faces = [{"box": [round(float(v), 1) for v in b[:4]], "score": round(float(b[4]), 4),
                  "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in p]}
                 for b, p in zip(boxes, points, strict=True)]
        print(json.dumps({"path": str(path), "faces": faces}))
    return 1 if failed else 0


def align(args: argparse.Namespace) -> int:
    from facepi.workflow import align_dataset

    pipeline = shared.pipeline(args, args.mode, args.margin)
    pipeline.size = args.image_size or pipeline.size  # default: what the embedding model wants
    report = align_dataset(pipeline, args.input_dir, args.output_dir, args.detect_multiple_faces,
                           shared.progress("aligning"))
    for f in report.failures:
        print(f"facepi: {f}", file=sys.stderr)
    print(f"Total number of images: {report.total}")
    print(f"Number of successfully aligned images: {report.aligned}")
    return 1 if report.failures else 0


def train(args: argparse.Namespace) -> int:
    from facepi.workflow import train

    pipeline = shared.pipeline(args, args.mode)
    from facepi.fileio import check_writable
    from facepi.identity import family, store

    check_writable(args.classifier_file)
    gallery, failures = train(pipeline, args.data_dir, args.classifier or "centroid", args.target_far or 0.01,
                              shared.progress("embedding"), args.models)
    family.replace(args.classifier_file, gallery, "train", summary=f"trained from {args.data_dir}")
    args.classifier_file = store.db_path(args.classifier_file)
    for f in failures:
        print(f"facepi: {f}", file=sys.stderr)
    counts = gallery.counts()
    print(f"Trained {gallery.meta['classifier']} on {sum(counts.values())} photos of {len(counts)} people "
          f"({pipeline.embedder.name}, {pipeline.mode} alignment)")
    shared.print_calibration(gallery.meta)
    print(f'Saved classifier model to file "{args.classifier_file}"')
    return 1 if failures else 0


def classify(args: argparse.Namespace) -> int:
    from facepi.cli.liveness import for_classify
    from facepi.identity.recognize import Recognizer
    from facepi.vision.detect import DetectorParams
    from facepi.workflow import classify_folder

    liveness = for_classify(args)
    rec = Recognizer(args.classifier_file, args.models, args.embedder, args.threads,
                     DetectorParams(minsize=args.minsize))
    results, accuracy = classify_folder(rec, args.data_dir, None if args.json else shared.progress("classifying"),
                                        liveness)
    extra = ("live", "liveness", "resembles")
    if args.json:
        out = {"accuracy": accuracy, "threshold": rec.classifier.threshold,
               "classifier": rec.classifier.kind, "model": rec.pipeline.embedder.name}
        if liveness:
            out["liveness"] = liveness[1].to_json()
        out["results"] = [{k: v for k, v in r.__dict__.items() if liveness or k not in extra} | {"correct": r.correct}
                          for r in results]
        print(json.dumps(out, indent=1))
    else:
        for i, r in enumerate(results):
            if r.error:
                print(f"{i:4d}  {r.path}: NO FACE ({r.error})")
            else:
                live = "" if r.live is None else (f"  live {r.liveness:.4g}" if r.live else
                                                  f"  NOT LIVE {r.liveness:.4g}"
                                                  + (f" (resembles {r.resembles})" if r.resembles else ""))
                print(f"{i:4d}  {r.path}: {r.name} {r.score:.3f} (distance {r.distance:.3f}){live}")
        if accuracy is not None:
            print(f"Accuracy: {accuracy:.3f}")
    return 1 if any(r.error for r in results) else 0


def evaluate(args: argparse.Namespace) -> int:
    from facepi.measure import evaluate as ev
    from facepi.vision.photos import embed_folder

    pipeline = shared.pipeline(args, args.mode)
    known = embed_folder(pipeline, args.enrolled, shared.progress("embedding"))
    if args.strangers:
        strangers = embed_folder(pipeline, args.strangers, shared.progress("embedding strangers"))
    else:  # split one folder of people in two halves by the seed
        k, s = ev.split_people(list(known.people), args.seed)
        strangers = ev.Embedded({p: known.people[p] for p in s})
        known = ev.Embedded({p: known.people[p] for p in k})
    report = ev.evaluate(known, strangers, args.enrol, pipeline.embedder.default_threshold)
    report["model"] = pipeline.embedder.name
    report["alignment"] = pipeline.mode
    if args.plot:
        ev.plot(report, args.plot, f"{report['model']}, {report['alignment']} alignment")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if not k.endswith("_distances")}, indent=1))
        return 0
    print(f"model {report['model']}, {report['alignment']} alignment; {report['enrolled_people']} people "
          f"enrolled with {args.enrol} photos each, {report['probe_photos']} probe photos, "
          f"{report['stranger_photos']} stranger photos of {report['stranger_people']} people; "
          f"{report['no_face_photos']} photos without a face")
    print(f"closed-set top-1: {report['top1']:.3f}")
    for far, row in report["at_far"].items():
        print(f"TAR at FAR {far}: {row['tar']:.3f} (threshold {row['threshold']:.4f}, measured FAR {row['far']:.4f})")
    if "default_threshold" in report:
        d = report["default_threshold"]
        print(f"default threshold {d['threshold']:.4f}: FAR {d['far']:.4f}, TAR {d['tar']:.3f}")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def validate_pairs(args: argparse.Namespace) -> int:
    from facepi.measure import pairs

    pipeline = shared.pipeline(args, args.mode)
    report = pairs.validate(pipeline, args.pairs_file, args.image_dir, args.ext, shared.progress("embedding"))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"Accuracy: {report['accuracy_mean']:.5f}+-{report['accuracy_std']:.5f}")
        print(f"Validation rate: {report['val_mean']:.5f}+-{report['val_std']:.5f} @ FAR={report['far_mean']:.5f}")
        print(f"Area Under Curve (AUC): {report['auc']:.3f}")
        print(f"Equal Error Rate (EER): {report['eer']:.3f}")
        if report["missing_pairs"]:
            print(f"Pairs skipped (photo missing or no face): {report['missing_pairs']}")
    return 1 if report["missing_pairs"] else 0
