"""Who is family: enroll, forget, people, the gallery's care (check, log, undo, remove, rename, wrong,
export) and the door's visitors. Every change goes through ``facepi.identity.family``."""

from __future__ import annotations

import argparse
import json
import sys

from facepi.cli import shared
from facepi.identity.store import load as load_gallery


def enroll(args: argparse.Namespace) -> int:
    from facepi.fileio import check_writable
    from facepi.identity import family
    from facepi.identity.gallery import check_name
    from facepi.identity.store import db_path

    name = check_name(args.name)  # before any work
    if args.face is not None and (len(args.photos) != 1 or args.photos[0].is_dir()):
        raise ValueError(f"--face {args.face} picks a face in one group photo: give that one photo "
                         f"(got {len(args.photos)} path(s){', a folder' if args.photos[0].is_dir() else ''})")
    path = shared.gallery_path(args)
    check_writable(path)
    exists = db_path(path).exists() or path.exists()
    if not exists:
        print(f"facepi: note: no gallery at {shared.stored_in(path)} yet: a new one is made there", file=sys.stderr)
    meta = load_gallery(path).meta if exists else {}
    if exists:
        args.embedder = args.embedder or meta.get("embedder")  # keep the gallery's model unless told
        pipeline = shared.pipeline(args, meta.get("alignment"), meta.get("margin"))
    else:
        pipeline = shared.pipeline(args, args.mode)
    enrolled = family.enrol(path, name, pipeline, args.photos, "cli", args.force, args.classifier, args.target_far,
                            args.largest_face, args.face, args.models, shared.progress("embedding"))
    done, report, said = enrolled.done, enrolled.report, enrolled.settings
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
    print(f"Enrolled {report.added} photo(s) of {name} in {shared.stored_in(path)} "
          f"({len(gallery.people)} people, {len(gallery.labels)} photos; undo: facepi gallery undo)")
    print(shared.plain_rule(gallery.meta))
    if gallery.counts().get(name, 0) < 3:
        print(f"facepi: note: {name} has {gallery.counts().get(name, 0)} photo(s) in the gallery; 3-5 from different "
              f"days, light and angles make the door far surer (add more: facepi enroll {name} MORE_PHOTOS)",
              file=sys.stderr)
    if args.verbose:
        shared.print_calibration(gallery.meta)
    if report.skipped:
        print(f"facepi: {len(report.skipped)} photo(s) of {name} skipped (named above; exit code 3): for a group "
              f"photo, enrol it alone with --face N; for a photo far from the others, check it is {name} "
              f"(facepi gallery check --sheet), then --force", file=sys.stderr)
        return 3
    return 1 if report.failures else 0


def forget(args: argparse.Namespace) -> int:
    from facepi.fileio import check_writable
    from facepi.identity import family

    path = shared.gallery_path(args)
    check_writable(path)
    done = family.forget(path, args.name, "cli", args.models)
    gallery = done.gallery
    print(f"Forgot {args.name} ({done.result} photo(s)); {len(gallery.people)} people remain"
          + ("" if gallery.people else " (nobody: every face is unknown)") + "; undo: facepi gallery undo")
    print("A running daemon picks the change up within seconds (or at once: systemctl reload facepi)")
    return 0


def people(args: argparse.Namespace) -> int:
    from facepi.workflow import people_summary

    summary = people_summary(load_gallery(shared.gallery_path(args)))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    for name, n in summary["people"].items():
        print(f"{name:<30}{n:>4} photo(s)")
    print(f"model {summary['model']}, classifier {summary['classifier']}, "
          f"threshold {summary['threshold'] if summary['threshold'] is None else round(summary['threshold'], 4)}")
    return 0


def gallery_log(args: argparse.Namespace) -> int:
    from facepi.identity.store import Store

    changes = Store(shared.gallery_path(args)).log(args.limit)  # reading the journal changes nothing
    if args.json:
        print(json.dumps([c.__dict__ for c in changes], indent=1))
        return 0
    for c in changes:
        state = f"  (undone by {c.undone_by})" if c.undone_by else ""
        forced = "  FORCED past: " + "; ".join(c.detail["overrode"]) if c.detail.get("forced") else ""
        print(f"{c.id:>4}  {c.at}  {c.origin:<9} {c.what:<13} {c.summary}{state}{forced}")
        if c.detail.get("photos"):  # which photos went in: what a household looks for in the log
            print(f"{'':>6}photos: {', '.join(map(str, c.detail['photos']))}")
    if not changes:
        print("no changes recorded yet (an .npz gallery moves into its database at its first change)")
    return 0


def gallery_undo(args: argparse.Namespace) -> int:
    from facepi.identity import family

    target, done = family.undo(shared.gallery_path(args), "cli")
    print(f"Undid change {target.id} ({target.what}, {target.at}, from {target.origin}): {target.summary}")
    print("A running daemon picks the change up within seconds")
    return 0


def gallery_restore(args: argparse.Namespace) -> int:
    from facepi.identity.backup import restore
    from facepi.identity.store import db_path

    path = shared.gallery_path(args)
    if args.backup.resolve() == db_path(path).resolve():
        raise ValueError(f"{args.backup} is the gallery itself; restore from a copy")
    print(f"Restored: {restore(path, args.backup, 'cli')}")
    print("A running daemon picks the change up within seconds")
    return 0


def gallery_remove(args: argparse.Namespace) -> int:
    from facepi.identity import family

    done = family.remove_photo(shared.gallery_path(args), args.name, args.photo, "cli", args.models)
    print(f"Removed {args.name}'s photo {args.photo} ({done.result}); "
          f"{done.gallery.counts().get(args.name, 0)} photo(s) remain; undo: facepi gallery undo")
    return 0


def gallery_rename(args: argparse.Namespace) -> int:
    from facepi.identity import family

    done = family.rename(shared.gallery_path(args), args.old, args.new, "cli", args.models)
    print(f"Renamed {args.old} to {args.new} ({done.result} photo(s)); undo: facepi gallery undo")
    return 0


def gallery_export(args: argparse.Namespace) -> int:

    if args.output.suffix != ".npz":
        raise ValueError(f"{args.output}: the export format is .npz (the seed's train/classify workflow)")
    gallery = load_gallery(shared.gallery_path(args))
    gallery.save(args.output)
    print(f"Exported {len(gallery.people)} people, {len(gallery.labels)} photos to {args.output}")
    return 0


def gallery_wrong(args: argparse.Namespace) -> int:
    from facepi.identity import family

    if args.event is not None:
        if args.photos:
            raise ValueError("--event names the recognition to correct: give no photos with it")
        try:
            done = family.wrong_event(shared.gallery_path(args), args.event, args.run, args.name, "cli", args.models,
                                      args.force)
        except family.Refused as e:
            print(f"facepi: {e}; nothing changed", file=sys.stderr)
            return 2
        print(f"Recorded: {done.change.summary}; undo: facepi gallery undo")
        return 0
    if args.name is None:
        raise ValueError("facepi gallery wrong: give NAME (its last recognition, or PHOTOS) or --event SEQ")
    if args.photos:
        pipeline = shared.pipeline(args)
        from facepi.vision.photos import embed_photos, photos_of

        photos, problems = photos_of(args.photos)
        embs, used, failures = embed_photos(pipeline, photos)
        for p in problems + failures:
            print(f"facepi: {p}", file=sys.stderr)
        if not len(embs):
            print("facepi: error: no face in the photos given; nothing changed", file=sys.stderr)
            return 2
        done = family.correct(shared.gallery_path(args), args.name, embs, ", ".join(used), "cli", args.models,
                              args.force)
    else:
        done = family.wrong_last(shared.gallery_path(args), args.name, "cli", args.models, args.force)
    print(f"Recorded: {done.change.summary}; undo: facepi gallery undo")
    return 0


def gallery_check(args: argparse.Namespace) -> int:
    from facepi.cli.liveness import check_lines
    from facepi.identity.health import LEGEND_TEXT, check, contact_sheet

    gallery = load_gallery(shared.gallery_path(args))
    report = check(gallery)
    live_lines, report["liveness"] = check_lines(str(shared.gallery_path(args)))
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
        print(shared.plain_rule(gallery.meta))
        print(f"threshold {t:.4f}" if t is not None else "threshold: not set")
        print(f"  {report['evidence']}")
        for line in live_lines:
            print(line)
        for w in report["warnings"]:
            print(f"warning: {w}")
    for e in report["errors"]:
        print(f"facepi: error: {e}", file=sys.stderr)
    if args.sheet:
        n = contact_sheet(gallery, report, args.sheet)
        print(f"contact sheet of {n} crop(s): {args.sheet} ({LEGEND_TEXT})", file=sys.stderr)
    return 2 if report["errors"] else 1 if report["warnings"] else 0


def only_for_listing(args: argparse.Namespace) -> None:
    """--json and --sheet belong to 'facepi visitors' itself: given before 'name' or 'forget' they would
    do nothing, so they are refused rather than ignored."""
    given = [flag for flag, value in (("--json", args.json), ("--sheet", args.sheet)) if value]
    if given:
        raise ValueError(f"{' and '.join(given)} list visitors; 'facepi visitors {args.visitors_command}' "
                         f"does not take {'them' if len(given) > 1 else 'it'}")


def visitors(args: argparse.Namespace) -> int:
    from facepi.identity.store import db_path
    from facepi.identity.visitor_book import sheet
    from facepi.identity.visitors import VisitorError

    book = shared.book(args)
    legacy = book.legacy if book.legacy is not None and book.legacy.is_file() else None
    gallery = shared.gallery_path(args)
    if not db_path(gallery).exists() and not gallery.exists() and legacy is None:
        raise VisitorError(f"{db_path(gallery)}: no such gallery database (visitors live in it; "
                           f"use --gallery, or [recognition] gallery in {shared.config_path(args)})")
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


def visitors_name(args: argparse.Namespace) -> int:
    from facepi.identity import family

    only_for_listing(args)
    shared.book(args).visitors()  # an earlier visitors.npz is imported first
    try:
        done = family.name_visitor(shared.gallery_path(args), args.visitor, args.name, "cli", args.force, args.models,
                                   shared.store_path(args))
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
          f"{shared.gallery_path(args)}; a running daemon picks the gallery up within seconds")
    return 0


def visitors_forget(args: argparse.Namespace) -> int:
    only_for_listing(args)
    book = shared.book(args)
    v = book.forget(args.visitor)
    print(f"Forgot {v.id} ({v.visits} visit(s)); {len(book.visitors())} visitor(s) remain")
    return 0
