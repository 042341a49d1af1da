"""``facepi``: the on-device command line. A thin layer over the library API.

Exit codes: 0 all went well; 1 the run finished but something failed (a photo
without a face, an unreadable file); 2 the command could not run (bad
arguments, missing or mismatched models, unreadable gallery, an enrolment
refused); 3 (enroll) the person was enrolled, but photos a check found doubtful
(several faces, far from the others, somebody else's) were skipped and named.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from facepi import __version__
from facepi.vision import runtime

DEFAULT_GALLERY = "/var/lib/facepi/gallery.npz"  # kept in gallery.db beside it (an old .npz is imported)


def _progress(label: str):
    def report(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            print(f"  {label}: {done}/{total}", file=sys.stderr, flush=True)
    return report


def _pipeline(args: argparse.Namespace, mode: str | None = None, margin: int | None = None):
    from facepi.vision.detect import DetectorParams
    from facepi.workflow import load_pipeline

    return load_pipeline(args.models, args.embedder, args.threads, mode, margin,
                         DetectorParams(minsize=args.minsize))


def _models(args: argparse.Namespace) -> int:
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


def _detect(args: argparse.Namespace) -> int:
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


def _align(args: argparse.Namespace) -> int:
    from facepi.workflow import align_dataset

    pipeline = _pipeline(args, args.mode, args.margin)
    pipeline.size = args.image_size or pipeline.size  # default: what the embedding model wants
    report = align_dataset(pipeline, args.input_dir, args.output_dir, args.detect_multiple_faces,
                           _progress("aligning"))
    for f in report.failures:
        print(f"facepi: {f}", file=sys.stderr)
    print(f"Total number of images: {report.total}")
    print(f"Number of successfully aligned images: {report.aligned}")
    return 1 if report.failures else 0


def _print_calibration(meta: dict) -> None:
    cal = meta.get("calibration") or {}
    print(f"Threshold: {meta.get('threshold'):.4f}: {cal.get('note', '')}")


def _plain_rule(meta: dict) -> str:
    """The gallery's rule in words a family uses: how often a stranger's photo is named as one of them.
    The operating point, margin and leave-one-out evidence behind it are for --verbose and gallery check."""
    cal = meta.get("calibration") or {}
    far = cal.get("target_far", meta.get("target_far"))
    if cal.get("source") not in ("model", "gallery") or not far:
        return ("How often strangers are mistaken for someone here is not measured for this model "
                "(its manifest has no operating points).")
    return (f"Strangers are mistaken for someone here {'at most ' if cal['source'] == 'gallery' else ''}"
            f"about 1 time in {round(1 / far):,} photos.")


def _train(args: argparse.Namespace) -> int:
    from facepi.workflow import train

    pipeline = _pipeline(args, args.mode)
    from facepi.fileio import check_writable
    from facepi.identity import family, store

    check_writable(args.classifier_file)
    gallery, failures = train(pipeline, args.data_dir, args.classifier or "centroid", args.target_far or 0.01,
                              _progress("embedding"), args.models)
    family.replace(args.classifier_file, gallery, "train", summary=f"trained from {args.data_dir}")
    args.classifier_file = store.db_path(args.classifier_file)
    for f in failures:
        print(f"facepi: {f}", file=sys.stderr)
    counts = gallery.counts()
    print(f"Trained {gallery.meta['classifier']} on {sum(counts.values())} photos of {len(counts)} people "
          f"({pipeline.embedder.name}, {pipeline.mode} alignment)")
    _print_calibration(gallery.meta)
    print(f'Saved classifier model to file "{args.classifier_file}"')
    return 1 if failures else 0


def _classify(args: argparse.Namespace) -> int:
    from facepi.vision.detect import DetectorParams
    from facepi.workflow import Recognizer, classify_folder

    rec = Recognizer(args.classifier_file, args.models, args.embedder, args.threads,
                     DetectorParams(minsize=args.minsize))
    results, accuracy = classify_folder(rec, args.data_dir, None if args.json else _progress("classifying"))
    if args.json:
        print(json.dumps({"accuracy": accuracy, "threshold": rec.classifier.threshold,
                          "classifier": rec.classifier.kind, "model": rec.pipeline.embedder.name,
                          "results": [r.__dict__ | {"correct": r.correct} for r in results]}, indent=1))
    else:
        for i, r in enumerate(results):
            if r.error:
                print(f"{i:4d}  {r.path}: NO FACE ({r.error})")
            else:
                print(f"{i:4d}  {r.path}: {r.name} {r.score:.3f} (distance {r.distance:.3f})")
        if accuracy is not None:
            print(f"Accuracy: {accuracy:.3f}")
    return 1 if any(r.error for r in results) else 0


def _evaluate(args: argparse.Namespace) -> int:
    from facepi.measure import evaluate as ev

    pipeline = _pipeline(args, args.mode)
    known = ev.embed_folder(pipeline, args.enrolled, _progress("embedding"))
    if args.strangers:
        strangers = ev.embed_folder(pipeline, args.strangers, _progress("embedding strangers"))
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


def _config_path(args: argparse.Namespace) -> Path:
    from facepi import config

    return getattr(args, "config", None) or config.DEFAULT_PATH


def _store_paths(args: argparse.Namespace) -> tuple[str, str]:
    """The gallery and the old visitor store the daemon uses: [recognition] gallery and [learning] path."""
    from facepi import config

    return config.store_paths(_config_path(args), require_file=getattr(args, "config", None) is not None)


def _gallery_path(args: argparse.Namespace) -> Path:
    """--gallery, else $FACEPI_GALLERY, else the config's [recognition] gallery: the one the daemon serves."""
    return Path(args.gallery or os.environ.get("FACEPI_GALLERY") or _store_paths(args)[0])


def _enroll(args: argparse.Namespace) -> int:
    from facepi.fileio import check_writable
    from facepi.identity import family
    from facepi.identity.gallery import Gallery, check_name, wrong_model
    from facepi.identity.store import db_path
    from facepi.workflow import check_fit, enroll, new_gallery, recalibrate

    name = check_name(args.name)  # before any work
    if args.face is not None and (len(args.photos) != 1 or args.photos[0].is_dir()):
        raise ValueError(f"--face {args.face} picks a face in one group photo: give that one photo "
                         f"(got {len(args.photos)} path(s){', a folder' if args.photos[0].is_dir() else ''})")
    path = _gallery_path(args)
    check_writable(path)
    exists = db_path(path).exists() or path.exists()
    meta = Gallery.load(path).meta if exists else {}
    if exists:
        args.embedder = args.embedder or meta.get("embedder")  # keep the gallery's model unless told
        pipeline = _pipeline(args, meta.get("alignment"), meta.get("margin"))
    else:
        pipeline = _pipeline(args, args.mode)
    said: list[str] = []

    def embed(current: Gallery | None):
        if current is None:
            gallery = new_gallery(pipeline, args.classifier or "centroid", args.target_far or 0.01)
        else:
            gallery = current
            if gallery.model != pipeline.embedder.model_id:
                raise wrong_model(path, gallery.model, pipeline.embedder.model_id)
            changed = {k: v for k, v in (("classifier", args.classifier), ("target_far", args.target_far))
                       if v is not None and v != gallery.meta.get(k)}
            if changed:  # applied, and said: never silently ignored
                check_fit(changed.get("classifier", gallery.meta.get("classifier", "centroid")),
                          changed.get("target_far", gallery.meta.get("target_far", 0.01)))
                gallery.meta.update(changed)
                recalibrate(gallery, args.models)
                said[:] = ["Gallery settings changed: " + ", ".join(f"{k} = {v}" for k, v in changed.items())]
        report = enroll(gallery, pipeline, name, args.photos, _progress("embedding"), force=args.force,
                        largest_face=args.largest_face, models_dir=args.models, face=args.face)
        reports[:] = [report]
        return gallery, report

    reports: list = []
    try:
        done = family.enrol(path, name, embed, "cli", args.force, {"largest_face": args.largest_face})
    except family.Refused:
        done = None
    report = reports[0]
    for line in said:
        print(line)
    for f in report.failures:
        print(f"facepi: {f}", file=sys.stderr)
    for n in report.notes:
        print(f"facepi: note: {n}", file=sys.stderr)
    for p in report.problems:
        print(f"facepi: {'warning' if args.force else 'refused'}: {p}", file=sys.stderr)
    for p in report.skipped:
        print(f"facepi: skipped: {p}", file=sys.stderr)
    if report.problems and not args.force:
        print(f"facepi: error: {name} not enrolled; gallery {db_path(path) if db_path(path).exists() else path} "
              f"unchanged. Fix the photos above, "
              f"or pass --force to enrol them as they are (recorded in the gallery's journal)", file=sys.stderr)
        return 2
    if done is None:
        already = any("skipped" in n for n in report.notes)
        if already and not report.failures:
            print(f"Nothing new: every photo of {name} is already in {path}")
            return 0
        print(f"facepi: error: no usable photo of {name}; gallery "
              f"{db_path(path) if db_path(path).exists() else path} unchanged", file=sys.stderr)
        return 2
    gallery = done.gallery
    print(f"Enrolled {report.added} photo(s) of {name} in {db_path(path)} "
          f"({len(gallery.people)} people, {len(gallery.labels)} photos; undo: facepi gallery undo)")
    print(_plain_rule(gallery.meta))
    if args.verbose:
        _print_calibration(gallery.meta)
    if report.skipped:
        print(f"facepi: {len(report.skipped)} photo(s) of {name} skipped (named above; exit code 3): for a group "
              f"photo, enrol it alone with --face N; for a photo far from the others, check it is {name} "
              f"(facepi gallery check --sheet), then --force", file=sys.stderr)
        return 3
    return 1 if report.failures else 0


def _forget(args: argparse.Namespace) -> int:
    from facepi.fileio import check_writable
    from facepi.identity import family

    path = _gallery_path(args)
    check_writable(path)
    done = family.forget(path, args.name, "cli", args.models)
    gallery = done.gallery
    print(f"Forgot {args.name} ({done.result} photo(s)); {len(gallery.people)} people remain"
          + ("" if gallery.people else " (nobody: every face is unknown)") + "; undo: facepi gallery undo")
    print("A running daemon picks the change up within seconds (or at once: systemctl reload facepi)")
    return 0


def _store_path(args: argparse.Namespace) -> Path | None:
    """An earlier visitors.npz (imported into the gallery's database on first use): --store, else the
    config's [learning] path. One named with --store that is not there (nor imported: its .bak) is said."""
    if args.store:
        legacy = Path(args.store)
        if not legacy.is_file() and not legacy.with_name(legacy.name + ".bak").is_file():
            print(f"facepi: note: --store {legacy}: no such file, nothing to import (visitors live in the "
                  f"gallery's database)", file=sys.stderr)
        return legacy
    return Path(_store_paths(args)[1])


def _book(args: argparse.Namespace):
    from facepi.identity.visitors import VisitorBook

    return VisitorBook(_gallery_path(args), _store_path(args))


def _only_for_listing(args: argparse.Namespace) -> None:
    """--json and --sheet belong to 'facepi visitors' itself: given before 'name' or 'forget' they would
    do nothing, so they are refused rather than ignored."""
    given = [flag for flag, value in (("--json", args.json), ("--sheet", args.sheet)) if value]
    if given:
        raise ValueError(f"{' and '.join(given)} list visitors; 'facepi visitors {args.visitors_command}' "
                         f"does not take {'them' if len(given) > 1 else 'it'}")


def _visitors(args: argparse.Namespace) -> int:
    from facepi.identity.store import db_path
    from facepi.identity.visitors import VisitorError, sheet

    book = _book(args)
    legacy = book.legacy if book.legacy is not None and book.legacy.is_file() else None
    gallery = _gallery_path(args)
    if not db_path(gallery).exists() and not gallery.exists() and legacy is None:
        raise VisitorError(f"{db_path(gallery)}: no such gallery database (visitors live in it; "
                           f"use --gallery, or [recognition] gallery in {_config_path(args)})")
    store = book.as_visitors()
    if args.sheet:
        print(f"Wrote {args.sheet} ({sheet(store, args.sheet)} visitor(s))")
    rows = [{"id": v.id, "visits": v.visits, "first_seen": v.first_seen, "last_seen": v.last_seen,
             "faces": int((store.owner == i).sum())} for i, v in enumerate(store.visitors)]
    if args.json:
        print(json.dumps({"store": str(book.store.path), "visitors": rows}, indent=2))
    elif not args.sheet:
        for r in rows:
            print(f"{r['id']:>5}  {r['visits']:3d} visit(s)  first {r['first_seen']}  last {r['last_seen']}  "
                  f"{r['faces']} face(s)")
        if not rows:
            print(f"No visitors yet in {book.store.path} (the daemon keeps unknown visitors with "
                  f"[learning] enabled = true)")
    return 0


def _visitors_name(args: argparse.Namespace) -> int:
    from facepi.identity import family

    _only_for_listing(args)
    _book(args).visitors()  # an earlier visitors.npz is imported first
    try:
        done = family.name_visitor(_gallery_path(args), args.visitor, args.name, "cli", args.force, args.models,
                                   _store_path(args))
    except family.Refused as e:
        for p in e.problems or [str(e)]:
            print(f"facepi: refused: {p}", file=sys.stderr)
        print(f"facepi: error: {args.visitor} not enrolled as {args.name}; nothing changed", file=sys.stderr)
        return 2
    report = done.result
    for n in report.notes:
        print(f"facepi: note: {n}", file=sys.stderr)
    for p in report.problems:
        print(f"facepi: warning: {p}", file=sys.stderr)
    print(f"Enrolled {report.added} door face(s) of {args.visitor} as {report.name} in {done.gallery and ''}"
          f"{_gallery_path(args)}; a running daemon picks the gallery up within seconds")
    return 0


def _visitors_forget(args: argparse.Namespace) -> int:
    _only_for_listing(args)
    book = _book(args)
    v = book.forget(args.visitor)
    print(f"Forgot {v.id} ({v.visits} visit(s)); {len(book.visitors())} visitor(s) remain")
    return 0


def _gallery_log(args: argparse.Namespace) -> int:
    from facepi.identity.store import Store

    changes = Store(_gallery_path(args)).log(args.limit)  # reading the journal changes nothing
    if args.json:
        print(json.dumps([c.__dict__ for c in changes], indent=1))
        return 0
    for c in changes:
        state = f"  (undone by {c.undone_by})" if c.undone_by else ""
        forced = "  FORCED past: " + "; ".join(c.detail["overrode"]) if c.detail.get("forced") else ""
        print(f"{c.id:>4}  {c.at}  {c.origin:<9} {c.what:<13} {c.summary}{state}{forced}")
    if not changes:
        print("no changes recorded yet (an .npz gallery moves into its database at its first change)")
    return 0


def _gallery_undo(args: argparse.Namespace) -> int:
    from facepi.identity import family

    target, done = family.undo(_gallery_path(args), "cli")
    print(f"Undid change {target.id} ({target.what}, {target.at}, from {target.origin}): {target.summary}")
    print("A running daemon picks the change up within seconds")
    return 0


def _gallery_remove(args: argparse.Namespace) -> int:
    from facepi.identity import family

    done = family.remove_photo(_gallery_path(args), args.name, args.photo, "cli", args.models)
    print(f"Removed {args.name}'s photo {args.photo} ({done.result}); "
          f"{done.gallery.counts().get(args.name, 0)} photo(s) remain; undo: facepi gallery undo")
    return 0


def _gallery_rename(args: argparse.Namespace) -> int:
    from facepi.identity import family

    done = family.rename(_gallery_path(args), args.old, args.new, "cli", args.models)
    print(f"Renamed {args.old} to {args.new} ({done.result} photo(s)); undo: facepi gallery undo")
    return 0


def _gallery_export(args: argparse.Namespace) -> int:
    from facepi.identity.gallery import Gallery

    if args.output.suffix != ".npz":
        raise ValueError(f"{args.output}: the export format is .npz (the seed's train/classify workflow)")
    gallery = Gallery.load(_gallery_path(args))
    gallery.save(args.output)
    print(f"Exported {len(gallery.people)} people, {len(gallery.labels)} photos to {args.output}")
    return 0


def _gallery_wrong(args: argparse.Namespace) -> int:
    from facepi.identity import family

    if args.photos:
        pipeline = _pipeline(args)
        from facepi.workflow import embed_photos, photos_of

        photos, problems = photos_of(args.photos)
        embs, used, failures = embed_photos(pipeline, photos)
        for p in problems + failures:
            print(f"facepi: {p}", file=sys.stderr)
        if not len(embs):
            print("facepi: error: no face in the photos given; nothing changed", file=sys.stderr)
            return 2
        done = family.correct(_gallery_path(args), args.name, embs, ", ".join(used), "cli", args.models, args.force)
    else:
        done = family.wrong_last(_gallery_path(args), args.name, "cli", args.models, args.force)
    print(f"Recorded: {done.change.summary}; undo: facepi gallery undo")
    return 0


def _gallery_check(args: argparse.Namespace) -> int:
    from facepi.identity.gallery import Gallery
    from facepi.identity.health import LEGEND_TEXT, check, contact_sheet

    gallery = Gallery.load(_gallery_path(args))
    report = check(gallery)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for p in report["people"]:
            near = f"nearest other: {p['nearest']} at {p['nearest_distance']:.2f}" if p["nearest"] else ""
            print(f"{p['name']:<24}{p['photos']:>3} photo(s)  spread {p['spread']:.2f}  {near}")
            if p["corrections"]:
                print(f"    {p['corrections']} correction(s) (\"that wasn't {p['name']}\"): recognised up to "
                      f"{p['accept_distance']:.4f} instead of {report['threshold']:.4f}")
            for o in p["outliers"]:
                print(f"    outlier: photo {o['number']}, {o['photo']} (distance {o['distance']:.2f} from the others)")
            for d in p["duplicates"]:
                print(f"    near-duplicates: {d[0]} ~ {d[1]}")
        t = report["threshold"]
        print(_plain_rule(gallery.meta))
        print(f"threshold {t:.4f}" if t is not None else "threshold: not set")
        print(f"  {report['evidence']}")
        for w in report["warnings"]:
            print(f"warning: {w}")
    if args.sheet:
        n = contact_sheet(gallery, report, args.sheet)
        print(f"contact sheet of {n} crop(s): {args.sheet} ({LEGEND_TEXT})", file=sys.stderr)
    return 1 if report["warnings"] else 0


def _people(args: argparse.Namespace) -> int:
    from facepi.identity.gallery import Gallery
    from facepi.workflow import people_summary

    summary = people_summary(Gallery.load(_gallery_path(args)))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    for name, n in summary["people"].items():
        print(f"{name:<30}{n:>4} photo(s)")
    print(f"model {summary['model']}, classifier {summary['classifier']}, "
          f"threshold {summary['threshold'] if summary['threshold'] is None else round(summary['threshold'], 4)}")
    return 0


def _validate_pairs(args: argparse.Namespace) -> int:
    from facepi.measure import pairs

    pipeline = _pipeline(args, args.mode)
    report = pairs.validate(pipeline, args.pairs_file, args.image_dir, args.ext, _progress("embedding"))
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


def _load_config(args: argparse.Namespace):
    from facepi import config

    overrides = {"source.uri": getattr(args, "source", None), "recognition.gallery": getattr(args, "classifier", None),
                 "mqtt.host": getattr(args, "mqtt_host", None), "mqtt.port": getattr(args, "mqtt_port", None),
                 "camera_id": getattr(args, "camera_id", None), "camera_name": getattr(args, "camera_name", None),
                 "source.fast": True if getattr(args, "fast", False) else None,
                 "log_level": getattr(args, "log_level", None)}
    path = args.config or config.DEFAULT_PATH
    return config.load(path, overrides=overrides, require_file=args.config is not None)


def _check_config(args: argparse.Namespace) -> int:
    """The effective configuration as TOML (it loads back as the same configuration), and where it came from."""
    from facepi import config

    cfg = _load_config(args)
    path = _config_path(args)
    if path.exists():
        origin = f"{path}, then FACEPI_* environment"
    else:
        origin = f"no config file ({path} not found): built-in defaults, then FACEPI_* environment"
    print(f"# {origin}")
    print(config.describe(cfg))
    print(f"configuration OK ({origin})", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    import logging

    from facepi.door.daemon import Daemon
    from facepi.redact import MaskingFilter

    cfg = _load_config(args)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskingFilter())  # camera logins never reach the journal, whoever logs them
    logging.basicConfig(level=cfg.log_level.upper(), handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    daemon = Daemon(cfg)
    daemon.install_signals()
    return daemon.run()


def _demo(args: argparse.Namespace) -> int:
    from facepi.demo import prepare

    video, gallery = prepare(log=lambda m: print(m, file=sys.stderr))
    args.source, args.classifier = str(video), str(gallery)
    print(f"demo: facepi run --source {video} --classifier {gallery}"
          f"{' --mqtt-host ' + args.mqtt_host if args.mqtt_host else ''}", file=sys.stderr)
    return _run(args)


def _face_number(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a face number counted from the left: 1, 2, ...")
    return n


def _shared_options(nested: bool = False) -> tuple[argparse.ArgumentParser, ...]:
    """The options several commands share: (common, gallery, visitor store).

    ``nested``: for a subcommand of a subcommand (facepi visitors name ...). Its defaults are
    SUPPRESS, so that an option given before it (facepi visitors --store F name V2 x) is kept,
    not overwritten by the inner parser's default."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if nested else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models", type=Path, default=default(None), help="models folder (default: bundled models/)")
    common.add_argument("--embedder", default=default(None),
                        help="embedding model file in the manifest, e.g. facenet_float32.tflite "
                             "(default: the manifest's default_embedder)")
    common.add_argument("--threads", type=int, default=default(0),
                        help="TFLite threads (default 0: the cores this process may use, at most 4)")
    common.add_argument("--minsize", type=int, default=default(20), help="smallest face in pixels (default: 20)")
    gal = argparse.ArgumentParser(add_help=False)
    gal.add_argument("--gallery", type=Path, default=default(None),
                     help=f"gallery file (default: $FACEPI_GALLERY, else [recognition] gallery in the config, "
                          f"else {DEFAULT_GALLERY})")
    gal.add_argument("--config", type=Path, default=default(None),
                     help="TOML config to take the gallery and [learning] path from (default: "
                          "/etc/facepi/facepi.toml if it exists)")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", default=default(None),
                       help="an earlier visitors.npz to import (default: [learning] path in the config; "
                            "visitors now live in the gallery's database)")
    return common, gal, store


def build_parser() -> argparse.ArgumentParser:
    common, gal, store = _shared_options()
    fit = argparse.ArgumentParser(add_help=False)
    fit.add_argument("--classifier", choices=("centroid", "svm"), default=None,
                     help="centroid (default) or svm; on an existing gallery: changes it")
    fit.add_argument("--target-far", type=float, default=None,
                     help="share of strangers that may be named as someone (default: 0.01); "
                          "on an existing gallery: changes it")
    fit.add_argument("--mode", choices=("crop", "landmarks"), default=None,
                     help="alignment (default: what the model's manifest entry says)")

    p = argparse.ArgumentParser(prog="facepi", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"facepi {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", parents=[common], help="list the models: intact, and what each runs on")
    models.add_argument("--json", action="store_true", help="one JSON object")
    models.set_defaults(func=_models)

    d = sub.add_parser("detect", parents=[common], help="faces MTCNN finds in photos, as JSON lines")
    d.add_argument("images", nargs="+", type=Path)
    d.set_defaults(func=_detect)

    a = sub.add_parser("align", parents=[common], help="align a dataset like the seed's align_dataset_mtcnn.py")
    a.add_argument("input_dir", type=Path)
    a.add_argument("output_dir", type=Path)
    a.add_argument("--image-size", type=int, default=None,
                   help="crop size (default: the embedding model's, e.g. 160 FaceNet, 112 MobileFaceNet)")
    a.add_argument("--margin", type=int, default=None, help="crop mode margin (default: the model's, 32 FaceNet)")
    a.add_argument("--mode", choices=("crop", "landmarks"), default=None,
                   help="alignment (default: the model's: crop for FaceNet, landmarks for MobileFaceNet)")
    a.add_argument("--detect-multiple-faces", action="store_true")
    a.set_defaults(func=_align)

    t = sub.add_parser("train", parents=[common, fit], help="build a gallery + classifier from folders")
    t.add_argument("data_dir", type=Path)
    t.add_argument("classifier_file", type=Path)
    t.set_defaults(func=_train)

    c = sub.add_parser("classify", parents=[common], help="classify photos with a gallery")
    c.add_argument("data_dir", type=Path)
    c.add_argument("classifier_file", type=Path)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_classify)

    e = sub.add_parser("enroll", parents=[common, gal, fit], help="add a person's photos to the gallery")
    e.add_argument("name")
    e.add_argument("photos", nargs="+", type=Path, help="photo files or folders")
    pick = e.add_mutually_exclusive_group()
    pick.add_argument("--face", type=_face_number, default=None, metavar="N",
                      help="in a group photo, enrol the Nth face counted from the left (1, 2, ...; a skipped "
                           "group photo prints the path of a preview with the faces numbered)")
    pick.add_argument("--largest-face", action="store_true",
                      help="in a photo with several faces, enrol the largest (default: skip the photo)")
    e.add_argument("--force", action="store_true",
                   help="enrol despite the gallery health checks (look-alike, outlier, several faces)")
    e.add_argument("--verbose", action="store_true",
                   help="also print the rule's evidence: threshold, operating point, margin, leave-one-out")
    e.set_defaults(func=_enroll)

    gc = sub.add_parser("gallery", help="look after the gallery: facepi gallery check [--sheet FILE.png]")
    gsub = gc.add_subparsers(dest="gallery_command", required=True)
    chk = gsub.add_parser("check", parents=[common, gal],
                          help="per person: photos, spread, outliers, nearest other person; the threshold")
    chk.add_argument("--sheet", type=Path, help="PNG contact sheet of every enrolment crop, problems marked")
    chk.add_argument("--json", action="store_true")
    chk.set_defaults(func=_gallery_check)
    lg = gsub.add_parser("log", parents=[gal], help="every change to who is family: what, when, from where")
    lg.add_argument("--limit", type=int, default=None)
    lg.add_argument("--json", action="store_true")
    lg.set_defaults(func=_gallery_log)
    un = gsub.add_parser("undo", parents=[gal], help="restore the gallery as it was before the last change")
    un.set_defaults(func=_gallery_undo)
    rm = gsub.add_parser("remove", parents=[common, gal], help="remove one photo of a person (numbered as on "
                                                             "the contact sheet)")
    rm.add_argument("name")
    rm.add_argument("photo", type=int, help="the photo's number on 'facepi gallery check --sheet' (1, 2, ...)")
    rm.set_defaults(func=_gallery_remove)
    rn = gsub.add_parser("rename", parents=[common, gal], help="rename a person")
    rn.add_argument("old")
    rn.add_argument("new")
    rn.set_defaults(func=_gallery_rename)
    ex = gsub.add_parser("export", parents=[gal], help="write the gallery as .npz (the seed's format)")
    ex.add_argument("output", type=Path)
    ex.set_defaults(func=_gallery_export)
    wr = gsub.add_parser("wrong", parents=[common, gal],
                         help="that wasn't NAME: the last recognition of NAME (or PHOTOS) kept as evidence "
                              "against NAME, whose accept distance tightens to exclude it")
    wr.add_argument("name")
    wr.add_argument("photos", nargs="*", type=Path, help="photos of who was wrongly named (default: the "
                                                          "daemon's last recognition of NAME)")
    wr.add_argument("--force", action="store_true",
                    help="record it even if it looks like NAME themself (recorded in the journal)")
    wr.set_defaults(func=_gallery_wrong)

    inner = _shared_options(nested=True)
    vi = sub.add_parser("visitors", parents=[common, store, gal],
                        help="unknown visitors the daemon kept ([learning]): list, sheet, name, forget")
    vi.add_argument("--json", action="store_true")
    vi.add_argument("--sheet", type=Path, help="PNG of each visitor's best door crops")
    vi.set_defaults(func=_visitors)
    vsub = vi.add_subparsers(dest="visitors_command")
    vn = vsub.add_parser("name", parents=list(inner), help="enrol a visitor's door crops as NAME")
    vn.add_argument("visitor", help="e.g. V7 (facepi visitors lists them)")
    vn.add_argument("name")
    vn.add_argument("--force", action="store_true", help="enrol despite the gallery health checks")
    vn.set_defaults(func=_visitors_name)
    vf = vsub.add_parser("forget", parents=list(inner), help="drop a visitor and its crops")
    vf.add_argument("visitor")
    vf.set_defaults(func=_visitors_forget)

    f = sub.add_parser("forget", parents=[common, gal], help="remove a person from the gallery")
    f.add_argument("name")
    f.set_defaults(func=_forget)

    pe = sub.add_parser("people", parents=[common, gal], help="who is enrolled")
    pe.add_argument("--json", action="store_true")
    pe.set_defaults(func=_people)

    ev = sub.add_parser("evaluate", parents=[common],
                        help="open-set quality: enrolled people vs strangers (TAR at FAR, top-1, plot)")
    ev.add_argument("enrolled", type=Path, help="one folder per person (the first --enrol photos are enrolled)")
    ev.add_argument("strangers", type=Path, nargs="?", help="people never enrolled (default: half of ENROLLED, "
                                                          "split by --seed)")
    ev.add_argument("--enrol", type=int, default=5, help="photos enrolled per person (default: 5)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--mode", choices=("crop", "landmarks"), default=None)
    ev.add_argument("--plot", type=Path, help="PNG: score histograms and TAR-FAR curve (needs matplotlib)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_evaluate)

    v = sub.add_parser("validate-pairs", parents=[common],
                       help="LFW-style verification (pairs.txt, 10 folds) like validate_on_lfw.py")
    v.add_argument("pairs_file", type=Path)
    v.add_argument("image_dir", type=Path)
    v.add_argument("--ext", default="jpg", help="photo extension in IMAGE_DIR (default: jpg)")
    v.add_argument("--mode", choices=("crop", "landmarks"), default=None)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_validate_pairs)

    conf = argparse.ArgumentParser(add_help=False)
    conf.add_argument("--config", type=Path, default=None,
                      help="TOML config (default: /etc/facepi/facepi.toml if it exists)")
    daemon = argparse.ArgumentParser(add_help=False)  # flags shared by run and demo
    daemon.add_argument("--mqtt-host", help="broker host (none: events as JSON lines on stdout)")
    daemon.add_argument("--mqtt-port", type=int)
    daemon.add_argument("--camera-id")
    daemon.add_argument("--camera-name", help="the Home Assistant device name (default: from the camera id)")
    daemon.add_argument("--fast", action="store_true", help="process a file as fast as possible, not at its pace")
    daemon.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    r = sub.add_parser("run", parents=[conf, daemon], help="the door-camera daemon: recognise and publish")
    r.add_argument("--source", help="camera index, /dev/video*, 'picamera2', RTSP/HTTP URL, video file or folder")
    r.add_argument("--classifier", help="gallery file (facepi train / enroll)")
    r.set_defaults(func=_run)
    dm = sub.add_parser("demo", parents=[conf, daemon], help="the daemon on the bundled demo input (real photos)")
    dm.set_defaults(func=_demo)
    cc = sub.add_parser("check-config", parents=[conf], help="validate the configuration and print it")
    cc.set_defaults(func=_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    from facepi.config import ConfigError
    from facepi.door.capture import SourceError
    from facepi.identity.gallery import GalleryError
    from facepi.identity.visitors import VisitorError
    from facepi.redact import mask
    from facepi.vision.images import ImageError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (runtime.ModelError, GalleryError, ImageError, ValueError, ConfigError, SourceError, VisitorError) as e:
        print(f"facepi: error: {mask(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable folder, a directory where a file was expected, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"facepi: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
