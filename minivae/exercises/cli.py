"""The command group ``minivae exercises``: list, make DIR --set NAMES, check DIR.

:func:`add_parser` adds it to the subcommands of :mod:`minivae.cli`; ``python -m minivae.exercises``
runs it on its own.
"""

import argparse
import json


def add_parser(subcommands):
    """Add the ``exercises`` subcommand (with list, make, check) to the ``argparse`` subparsers ``subcommands``."""
    from .grading import DEFAULT_TIME_LIMIT

    parser = subcommands.add_parser(
        "exercises", help="gradient-check assignments made from the library's own code, and their autograder",
        description="Make an assignment folder whose functions are minivae's with the bodies blanked out, and "
                    "grade it: values against the library, backward passes against finite differences, the "
                    "common mistakes named.")
    actions = parser.add_subparsers(dest="exercises_command", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="the available exercises, grouped")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    make = actions.add_parser("make", help="write an assignment folder",
                              description="Write DIR: one student file per exercise, a README, and the grader.")
    make.add_argument("directory", metavar="DIR")
    make.add_argument("--set", dest="names", required=True, metavar="NAMES",
                      help="exercise names, comma separated (or all, core, family)")
    make.add_argument("--seed", type=int, default=0, help="varies the shapes and data per student or exam (default 0)")
    make.add_argument("--solutions", action="store_true", help="the instructor's copy, with the solutions")
    make.add_argument("--force", action="store_true", help="write into DIR even if it is not empty")
    make.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT,
                      help="seconds to grade one exercise (default %(default)g)")
    grade = actions.add_parser("check", help="grade an assignment folder, write its results.json",
                               description="Grade DIR: a table (pass/fail, worst relative error, hint) and "
                                           "DIR/results.json in Gradescope's format.")
    grade.add_argument("directory", metavar="DIR")
    grade.add_argument("--time-limit", type=float, help="seconds per exercise (default: the folder's)")
    parser.set_defaults(run=run)
    return parser


def run(args):
    """Run ``minivae exercises ...``; returns the exit code (check: 0 when everything passes, else 1)."""
    from . import assignment

    if args.exercises_command == "list":
        groups = assignment.list_exercises()
        if args.json:
            print(json.dumps({group: [name for name, _ in items] for group, items in groups.items()}, indent=2))
            return 0
        from .registry import GROUPS
        for group, items in groups.items():
            print(f"{group}: {GROUPS[group]}")
            width = max(len(name) for name, _ in items)
            for name, title in items:
                print(f"  {name.ljust(width)}  {title}")
        return 0
    if args.exercises_command == "make":
        written = assignment.make(args.directory, args.names, seed=args.seed, solutions=args.solutions,
                                  force=args.force, time_limit=args.time_limit)
        kind = "solutions" if args.solutions else "assignment"
        print(f"wrote the {kind} to {args.directory}: " + ", ".join(path.name for path in written))
        return 0
    report = assignment.check(args.directory, time_limit=args.time_limit)
    return 0 if report["score"] == report["max_score"] else 1


def main(argv=None):
    """``python -m minivae.exercises ACTION ...``: the same as ``minivae exercises ACTION ...``."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_grade"]:  # one exercise, printed as JSON: what `check` runs in a child process
        hidden = argparse.ArgumentParser(prog="python -m minivae.exercises _grade")
        hidden.add_argument("directory")
        hidden.add_argument("name")
        hidden.add_argument("--seed", type=int, default=0)
        args = hidden.parse_args(argv[1:])
        from .grading import grade_folder_exercise
        print(json.dumps(grade_folder_exercise(args.directory, args.name, args.seed).to_dict()))
        return 0
    parser = argparse.ArgumentParser(prog="python -m minivae")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["exercises"] + argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.exit(2, f"minivae exercises: error: {error}\n")
