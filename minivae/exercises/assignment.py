"""Assignments: make a self-contained folder for students, and grade it.

A folder made by :func:`make` holds

* one Python file per exercise (exercises that share a library function share its file), with the
  chosen bodies replaced by a TODO and ``raise NotImplementedError``;
* ``README.md`` for the student; ``assignment.json`` (the exercises, the seed, the time limit);
* ``test_assignment.py``: ``python -m pytest`` inside the folder grades it, through :mod:`minivae.exercises`.

:func:`check` grades every exercise in a child process with a time limit, prints a table and
writes ``results.json`` in the format of Gradescope's autograder.
"""

import json
import sys
from pathlib import Path

from . import source
from .grading import DEFAULT_TIME_LIMIT, grade_in_subprocess
from .registry import EXERCISES, GROUPS

ASSIGNMENT_FILE = "assignment.json"
RESULTS_FILE = "results.json"


def list_exercises():
    """The exercises, grouped: a dict group -> list of (name, title), in the registry's order."""
    groups = {group: [] for group in GROUPS}
    for exercise in EXERCISES.values():
        groups[exercise.group].append((exercise.name, exercise.title))
    return groups


def check_names(names):
    """``names`` (a list, or one comma-separated string; "all", "core" and "family" select groups) as a list."""
    if isinstance(names, str):
        names = [names]
    if names is None or not all(isinstance(name, str) for name in names):
        raise TypeError(f"names must be a list of exercise names or a comma-separated string; got {names!r}")
    chosen = []
    for item in names:
        for name in (part.strip() for part in item.split(",")):
            if not name:
                continue
            if name == "all":
                chosen += list(EXERCISES)
            elif name in GROUPS:
                chosen += [key for key, exercise in EXERCISES.items() if exercise.group == name]
            elif name in EXERCISES:
                chosen.append(name)
            else:
                raise ValueError(f"unknown exercise {name!r}; the exercises are: {', '.join(EXERCISES)} "
                                 f"(or a group: all, {', '.join(GROUPS)})")
    if not chosen:
        raise ValueError("no exercise given: name at least one (see `minivae exercises list`)")
    return list(dict.fromkeys(chosen))


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer ≥ 0; got {seed!r}")
    return seed


def make(directory, names, seed=0, solutions=False, force=False, time_limit=DEFAULT_TIME_LIMIT):
    """Write an assignment folder.

    Parameters
    ----------
    directory : path; refused if it exists and is not empty, unless ``force``
    names : exercise names (a list or a comma-separated string; "all", "core", "family" for groups)
    seed : int ≥ 0, varies the shapes and the reference data (one per student or exam)
    solutions : bool; True writes the instructor's copy, with the solutions
    force : bool; write into a non-empty folder (its files of the same names are replaced)
    time_limit : float > 0, seconds allowed to grade one exercise

    Returns
    -------
    list of Path, the files written
    """
    names, seed = check_names(names), _check_seed(seed)
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or not time_limit > 0:
        raise ValueError(f"time_limit must be a number of seconds > 0; got {time_limit!r}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise ValueError(f"{directory} exists and is not empty; choose a new folder or pass --force (force=True) "
                         f"to write into it")
    directory.mkdir(parents=True, exist_ok=True)

    files = {}  # file name -> [(target path, label, todos, exercise name)]
    for name in names:
        exercise = EXERCISES[name]
        for target in exercise.targets:
            files.setdefault(exercise.file_name, []).append((target.path, target.label, target.todos, name))
    written = []
    for file_name, items in files.items():
        exercises = sorted(dict.fromkeys(item[3] for item in items), key=names.index)
        kind = "Solutions" if solutions else "Exercise"
        header = (f"{kind}: {', '.join(exercises)} (minivae exercises, seed {seed}).\n\n"
                  + ("The instructor's copy: the library's own solutions, between the markers.\n"
                     if solutions else
                     "Fill in each TODO: replace `raise NotImplementedError` by your code (keep the names and the\n"
                     "signature). Grade it with `python -m pytest` in this folder, or with\n"
                     "`python -m minivae.exercises check .`\n"))
        path = directory / f"{file_name}.py"
        path.write_text(source.student_file(items, header, solutions=solutions), encoding="utf-8")
        written.append(path)
    settings = {"exercises": names, "seed": seed, "solutions": bool(solutions), "time_limit": float(time_limit),
                "files": {name: f"{EXERCISES[name].file_name}.py" for name in names}}
    for file_name, text in ((ASSIGNMENT_FILE, json.dumps(settings, indent=2) + "\n"),
                            ("README.md", _readme(names, seed, solutions)),
                            ("test_assignment.py", TEST_FILE),
                            ("pytest.ini", "[pytest]\naddopts = -q\n")):
        (directory / file_name).write_text(text, encoding="utf-8")
        written.append(directory / file_name)
    return written


def read_assignment(directory):
    """The settings of an assignment folder (its ``assignment.json``), checked."""
    path = Path(directory) / ASSIGNMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not an assignment folder made by "
                                f"`minivae exercises make`")
    settings = json.loads(path.read_text(encoding="utf-8"))
    check_names(settings.get("exercises") or [])
    _check_seed(settings.get("seed"))
    settings.setdefault("time_limit", DEFAULT_TIME_LIMIT)
    return settings


def check(directory, time_limit=None, out=None, write=True):
    """Grade the assignment folder ``directory``: one exercise per child process, with a time limit.

    Parameters
    ----------
    directory : path of a folder made by :func:`make`
    time_limit : seconds per exercise (default: the folder's, set by make)
    out : a text stream for the table (None: sys.stdout; False: print nothing)
    write : bool, write ``results.json`` in the folder

    Returns
    -------
    dict in the format of Gradescope's autograder: {"score", "max_score", "tests": [{"name", "score",
    "max_score", "output", "status"}...]}
    """
    directory = Path(directory)
    settings = read_assignment(directory)
    limit = settings["time_limit"] if time_limit is None else time_limit
    results = [grade_in_subprocess(directory, name, settings["seed"], limit) for name in settings["exercises"]]
    report = {"score": sum(r.score for r in results), "max_score": sum(r.max_score for r in results),
              "tests": [{"name": f"{r.name}: {EXERCISES[r.name].title}", "score": r.score, "max_score": r.max_score,
                         "output": r.output, "status": "passed" if r.passed else "failed"} for r in results]}
    if write:
        (directory / RESULTS_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if out is not False:
        print(table(results), file=out or sys.stdout)
    return report


def table(results):
    """The grades as text: one row per exercise (pass/fail, the worst relative error, the hint), then the total."""
    rows = [("exercise", "result", "worst rel. error", "hint")]
    for r in results:
        error = "-" if r.worst_error is None else f"{r.worst_error:.1e}"
        if r.passed:
            hint = ""
        elif r.hint:
            hint = f"{r.mistake}: {r.hint}"
        else:
            hint = r.lines[0] if r.lines else ""
        rows.append((r.name, "pass" if r.passed else r.status if r.status != "fail" else "FAIL", error, hint))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    score, total = sum(r.score for r in results), sum(r.max_score for r in results)
    lines.append(f"score: {score:g} / {total:g}")
    for r in results:
        if not r.passed and r.status != "not implemented":
            lines.append(f"\n{r.name}:\n  " + "\n  ".join(r.output.splitlines()))
    return "\n".join(lines)


def _readme(names, seed, solutions):
    rows = "\n".join(f"| `{name}` | {EXERCISES[name].title} | `{EXERCISES[name].file_name}.py` |" for name in names)
    intro = ("This is the instructor's copy: every file holds the library's solution, and grades full marks."
             if solutions else
             "Each file below holds functions of the minivae library whose bodies were replaced by a TODO and "
             "`raise NotImplementedError`. The TODO says the shapes and what to return; the docstring above it "
             "gives the equations. Replace the `raise` by your code, keeping the names and the signatures.")
    return f"""# minivae exercises (seed {seed})

{intro}

| exercise | what | file |
|---|---|---|
{rows}

## What you need

Python with minivae installed (`pip install minivae`, or `pip install -e .` in its checkout). Nothing
else: the grader is part of minivae.

## How you are graded

Run, in this folder,

    python -m pytest                # one test per exercise
    python -m minivae.exercises check .   # a table, and results.json

Each exercise is checked in float64 on small arrays drawn from this assignment's seed:

* your values against the library's, with their shapes and dtypes;
* your backward passes against centered finite differences of *your own* forward
  (df/dx ≈ (f(x + h) - f(x - h)) / 2h, h = 1e-5);
* that your functions do not change their inputs in place (the optimizer updates change p and
  their running statistics in place, and must);
* each exercise has a time limit.

When a result is wrong, the grader compares it with the common mistakes it knows and names the one
you made (for example "exp(logvar) is the variance, not the standard deviation"). Relative errors
are max |a - b| / (|a| + |b|): about 1e-10 means right; 1e-2 or more means a bug.

Do not edit `assignment.json` or `test_assignment.py`: the grader reads the seed from them.
"""


TEST_FILE = '''"""The grader of this assignment: `python -m pytest` in this folder runs one test per exercise.

Each exercise is graded by minivae.exercises in a separate process, with a time limit.
"""

from pathlib import Path

import pytest

from minivae.exercises import grade_in_subprocess, read_assignment

HERE = Path(__file__).resolve().parent
SETTINGS = read_assignment(HERE)


@pytest.mark.parametrize("name", SETTINGS["exercises"])
def test_exercise(name):
    result = grade_in_subprocess(HERE, name, SETTINGS["seed"], SETTINGS["time_limit"])
    assert result.passed, result.output
'''
