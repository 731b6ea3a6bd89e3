"""Keep the course's generated parts current, and check the notebooks against the course's standards.

``hemolab course nav`` regenerates everything that derives from ``hemolab.course.COURSE``: the index
notebook, the Colab badge and previous/next links in every notebook, and the course map in README.md
(between ``<!-- course-map:start -->`` and ``<!-- course-map:end -->``, if the markers are there). Run it
after adding, renaming or retiming a notebook; ``--check`` only reports (exit status 1 if anything is stale).

``hemolab course check`` lists every notebook that breaks the standards (title, learning goals, expected run
times, badge, navigation, parameters and set-up cells, summary and exercises, no outputs, no hard-coded device).
``hemolab course readme-table`` prints the course map as markdown; ``hemolab course links`` the launch badges.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "the course: regenerate the index and navigation (nav), check notebook standards (check), print the map"
)

ACTIONS = ("nav", "index", "check", "readme-table", "text", "links")


def _default_root() -> Path:
    import hemolab

    checkout = Path(hemolab.__file__).resolve().parent.parent
    return checkout if (checkout / "notebooks").is_dir() else Path.cwd()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="nav: regenerate index, badges, links and the README map; index: only the index notebook; "
        "check: report notebooks that break the standards; readme-table: print the course map as markdown; "
        "text: print it as text; links: print the Binder and Colab badges",
    )
    parser.add_argument(
        "--notebooks",
        type=Path,
        default=None,
        metavar="DIR",
        help="the notebooks folder (default: notebooks/ of the hemolab checkout, else of the current folder)",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        metavar="FILE",
        help="the README whose course-map block `nav` rewrites (default: README.md next to the notebooks folder)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="with nav/index: write nothing, list what is stale and exit with status 1 if anything is",
    )


def run(args: argparse.Namespace) -> int:
    from hemolab import course

    notebooks = args.notebooks or _default_root() / "notebooks"
    readme = args.readme or notebooks.resolve().parent / "README.md"
    if args.action == "readme-table":
        print(course.course_markdown())
        return 0
    if args.action == "text":
        course.print_course()
        return 0
    if args.action == "links":
        print(f"Binder (JupyterLab at the course index):\n{course.binder_badge()}\n")
        print(f"Colab (the course index):\n{course.colab_badge(course.INDEX)}")
        return 0
    if args.action == "check":
        problems = course.course_problems(notebooks)
        for path in sorted(notebooks.glob("*.ipynb")):
            problems += course.notebook_problems(path)
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s) in {notebooks}")
        return 1 if problems else 0
    verb = "stale" if args.check else "updated"
    stale = []
    if course.write_index(notebooks, check=args.check):
        stale.append(notebooks / course.INDEX)
    if args.action == "nav":
        stale += course.update_navigation(notebooks, check=args.check)
        if course.update_readme(readme, check=args.check):
            stale.append(readme)
        elif not (readme.is_file() and course.README_START in readme.read_text(encoding="utf-8")):
            print(f"note: {readme} has no {course.README_START} ... {course.README_END} block; left alone")
    for path in dict.fromkeys(stale):
        print(f"{verb}: {path}")
    if not stale:
        print("everything is up to date")
    return 1 if (args.check and stale) else 0
