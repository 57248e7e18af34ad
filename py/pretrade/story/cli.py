"""`pretrade scenario flash-crash`: run the story twice (static, dynamic), print it, and write
the JSON facts and the HTML report when asked."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def run_flash_crash(args: argparse.Namespace) -> int:
    """Both runs of the story from `args.seed`; `args.json` and `args.report` are optional paths."""
    from pretrade.story.report import facts, text, timeline, write_html, write_json
    from pretrade.story.runner import StoryConfig, run_story

    cfg = StoryConfig(seed=args.seed)
    folder = Path(tempfile.mkdtemp(prefix="pretrade-story-"))
    try:
        runs = run_story(cfg, folder)
    except (RuntimeError, TimeoutError, OSError) as e:
        log.error("flash-crash story failed: %s (process logs kept in %s)", e, folder)
        return 1
    if args.report:  # the processes' logs go with the report; journals and FIX stores do not
        for f in folder.glob("*/*.log"):
            dest = Path(args.report) / "logs" / f.parent.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
    shutil.rmtree(folder, ignore_errors=True)
    fx = facts(cfg, runs)
    tl = timeline(runs["dynamic"], cfg, fx["first_cut_time"])
    print(text(fx, tl))
    if args.json:
        write_json(fx, Path(args.json))
        print(f"\nfacts written to {args.json}")
    if args.report:
        path = write_html(fx, runs, cfg, tl, Path(args.report))
        print(f"report written to {path}")
    return 0
