"""Grading: run a student's functions on the reference inputs, check them, and name the mistake.

For each case of an exercise (inputs from the assignment's seed, float64):

1. values: each output against the library's (NumPy path), with its shape and dtype;
2. gradients: the student's backward against centered finite differences of the student's own forward;
3. the inputs: none changed in place (except those an in-place update owns);
4. when something fails, the outputs are compared with each known mistake's wrong variant: a match
   gives the hint that names the mistake.

A student's file is loaded on its own, so a syntax or import error affects only the exercises in it.
:func:`grade_in_subprocess` runs one exercise in a child process with a time limit (a function that
hangs scores zero, and the others are still graded).
"""

import copy
import importlib
import importlib.util
import json
import subprocess
import sys
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .registry import EXERCISES

RELATIVE_FLOOR = 1e-6  # in an error, entries below this fraction of the array's scale count as that (round-off)
GRADIENT_FLOOR = 1e-4  # the same against finite differences, whose round-off is about 1e-16 · |f| / h ≈ 1e-10
MATCH_TOL = 1e-6       # a student's output "is" a wrong variant's when they agree to this relative error
DEFAULT_TIME_LIMIT = 60.0  # seconds per exercise


@dataclass
class Result:
    name: str
    passed: bool = False
    score: float = 0.0
    max_score: float = 1.0
    worst_error: float = None
    status: str = "fail"          # "pass", "fail", "not implemented", "error", "time limit"
    hint: str = ""
    mistake: str = None
    lines: list = field(default_factory=list)

    @property
    def output(self):
        return "\n".join(self.lines)

    def to_dict(self):
        result = asdict(self)
        result["output"] = self.output
        return result


def relative_error(a, b, floor=RELATIVE_FLOOR):
    """max |a - b| / max(|a| + |b|, floor · scale): elementwise, with a floor at the arrays' scale
    (scale = max |a| + max |b|), so that round-off in entries near 0 does not count as an error.

    Non-finite entries must agree exactly (inf with inf, NaN with NaN); a disagreement there counts as
    an error of 1.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    finite = np.isfinite(a) & np.isfinite(b)
    same_nonfinite = (a == b) | (np.isnan(a) & np.isnan(b))
    if not np.all(finite | same_nonfinite):
        return 1.0
    if not np.any(finite):
        return 0.0
    a, b = a[finite], b[finite]
    scale = max(np.max(np.abs(a)) + np.max(np.abs(b)), 1e-300)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), floor * scale)))


def _matches(value, expected, tol=MATCH_TOL):
    if value is None or expected is None:
        return value is None and expected is None
    value, expected = np.asarray(value), np.asarray(expected)
    if value.shape != expected.shape or value.dtype.kind not in "biuf" or expected.dtype.kind not in "biuf":
        return False
    return relative_error(value, expected) <= tol


def _snapshot(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {key: _snapshot(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(item) for item in value)
    return value


def _unchanged(before, after):
    if isinstance(before, np.ndarray):
        return (isinstance(after, np.ndarray) and before.shape == after.shape
                and np.array_equal(before, after, equal_nan=True))
    if isinstance(before, dict):
        return isinstance(after, dict) and before.keys() == after.keys() and all(
            _unchanged(before[key], after[key]) for key in before)
    if isinstance(before, (list, tuple)):
        return len(before) == len(after) and all(_unchanged(x, y) for x, y in zip(before, after))
    return True


# --------------------------------------------------------------------------------------------------
# Loading a student's functions
# --------------------------------------------------------------------------------------------------

class LoadError(Exception):
    """The student's file could not be loaded (a syntax or import error): the message says why."""


def load_student_file(path):
    """Import the Python file ``path`` as a fresh module; a LoadError carries the error as the student should see it."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path.name} is missing from the assignment folder")
    module_name = f"_minivae_student_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise LoadError(f"{path.name} has a syntax error, line {error.lineno}: {error.msg}\n"
                        f"    {(error.text or '').rstrip()}") from None
    except Exception as error:
        raise LoadError(f"{path.name} could not be imported: {type(error).__name__}: {error}") from None
    return module


def resolver(exercise, student=None):
    """``f(name)`` for ``exercise.run``: ``"ops.linear_forward"`` -> the student's (a target) or the library's."""
    own = {target.top for target in exercise.targets}

    def f(name):
        module, _, attr = name.rpartition(".")
        library = getattr(importlib.import_module("minivae." + module), attr)
        if student is not None and attr in own:
            file = Path(getattr(student, "__file__", "your file")).name
            if not hasattr(student, attr):
                raise LoadError(f"{file} does not define {attr}")
            if getattr(student, attr) is library:
                raise LoadError(f"{file} imports {attr} from minivae instead of defining it: write your own")
            return getattr(student, attr)
        return library
    return f


# --------------------------------------------------------------------------------------------------
# Grading one exercise in this process
# --------------------------------------------------------------------------------------------------

def _student_frames(error, student):
    """Where in the student's file the error was raised (its last frame there), or ""."""
    path = getattr(student, "__file__", None)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if path and frame.filename == path]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (in {Path(frame.filename).name}, line {frame.lineno}: {(frame.line or '').strip()})"


def grade(exercise, student, seed=0):
    """Grade ``student`` (a module with the exercise's functions, or None for the library itself).

    Parameters
    ----------
    exercise : an Exercise of the registry, or its name
    student : module or None
    seed : int, the assignment's seed (the cases' shapes and data)

    Returns
    -------
    Result
    """
    exercise = EXERCISES[exercise] if isinstance(exercise, str) else exercise
    result = Result(exercise.name, max_score=float(exercise.points))
    problems, student_outputs, cases = [], [], exercise.cases(exercise.rng(seed))
    worst = 0.0
    reference, mine = resolver(exercise), resolver(exercise, student)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, case in enumerate(cases, start=1):
            where = f" (case {index})" if len(cases) > 1 else ""
            expected = {}
            exercise.run(reference, copy.deepcopy(case), expected)
            inputs, pristine, got = copy.deepcopy(case), _snapshot(case), {}
            try:
                exercise.run(mine, inputs, got)
            except NotImplementedError as error:
                result.status = "not implemented"
                result.lines = [f"not implemented: {error or 'a function raises NotImplementedError'}; replace "
                                f"`raise NotImplementedError` by your code"]
                return result
            except LoadError as error:
                result.status, result.lines = "error", [str(error)]
                return result
            except Exception as error:
                problems.append(f"your code raised {type(error).__name__}: {error}{_student_frames(error, student)}{where}")
            student_outputs.append(got)
            for key in case:
                if key not in exercise.mutable and not _unchanged(pristine[key], inputs[key]):
                    problems.append(f"the input {key} was changed in place{where}: compute new arrays instead")
            for key, want in expected.items():
                if key not in got:
                    continue
                have = got[key]
                if have is None or not np.asarray(have).dtype.kind in "biuf":
                    problems.append(f"{key}: expected an array, got {type(have).__name__}{where}")
                    continue
                have, want = np.asarray(have), np.asarray(want)
                if have.shape != want.shape:
                    problems.append(f"{key}: shape {have.shape}, expected {want.shape}{where}")
                    continue
                if isinstance(expected[key], np.ndarray) and have.dtype != want.dtype:
                    problems.append(f"{key}: dtype {have.dtype}, expected {want.dtype}{where}")
                error = relative_error(have, want)
                worst = max(worst, error)
                if error > exercise.value_tol:
                    problems.append(f"{key}: relative error {error:.1e} against the reference{where}")
            if (len(got) == len(expected) and not case.get("values_only")
                    and not any(p.startswith("your code raised") for p in problems)):
                try:
                    for label, analytic, numerical in exercise.gradients(mine, copy.deepcopy(case)):
                        if analytic is None or np.shape(analytic) != np.shape(numerical):
                            problems.append(f"{label}: your backward gave shape {np.shape(analytic)}; finite "
                                            f"differences of your forward have shape {np.shape(numerical)}{where}")
                            continue
                        error = relative_error(analytic, numerical, GRADIENT_FLOOR)
                        worst = max(worst, error)
                        if error > exercise.grad_tol:
                            problems.append(f"{label}: relative error {error:.1e} against centered finite differences "
                                            f"of your forward{where}")
                except Exception as error:
                    problems.append(f"the gradient check raised {type(error).__name__}: {error}"
                                    f"{_student_frames(error, student)}{where}")

    result.worst_error = worst
    if not problems:
        result.passed, result.score, result.status = True, result.max_score, "pass"
        result.lines = [f"pass: worst relative error {worst:.1e} ({len(cases)} case{'s' * (len(cases) > 1)}, seed {seed})"]
        return result
    mistake = recognise(exercise, cases, student_outputs)
    if mistake is not None:
        result.mistake, result.hint = mistake.name, mistake.hint
    result.lines = [f"fail: {problem}" for problem in dict.fromkeys(problems)]
    if mistake is not None:
        result.lines.append(f"hint ({mistake.name}): {mistake.hint}")
    return result


def recognise(exercise, cases, student_outputs):
    """The known mistake the student's outputs show, or None.

    A mistake is recognised when, on every case where its variant predicts something, the student's
    outputs agree with the variant (or with the reference, where the variant agrees with it too), and
    on at least one case the variant differs from the reference and the student agrees with it.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = []
        for case in cases:
            out = {}
            exercise.run(resolver(exercise), copy.deepcopy(case), out)
            expected.append(out)
        for mistake in exercise.mistakes:
            shown, consistent = False, True
            for case, got, want in zip(cases, student_outputs, expected):
                try:
                    predicted = mistake.variant(copy.deepcopy(case))
                except Exception:
                    predicted = None
                if not predicted:
                    continue
                differs = any(not _matches(value, want.get(key)) for key, value in predicted.items())
                agrees = all(key in got and _matches(got[key], value) for key, value in predicted.items())
                if differs and agrees:
                    shown = True
                elif not agrees:
                    consistent = False
                    break
            if shown and consistent:
                return mistake
    return None


def grade_folder_exercise(folder, name, seed):
    """Load the student's file of exercise ``name`` from ``folder`` and grade it (in this process)."""
    exercise = EXERCISES[name]
    try:
        student = load_student_file(Path(folder) / f"{exercise.file_name}.py")
    except LoadError as error:
        return Result(name, max_score=float(exercise.points), status="error",
                      lines=[f"error: {error}", "graded zero: fix the file and grade again"])
    return grade(exercise, student, seed)


# --------------------------------------------------------------------------------------------------
# One exercise in a child process, with a time limit
# --------------------------------------------------------------------------------------------------

def grade_in_subprocess(folder, name, seed, time_limit=DEFAULT_TIME_LIMIT):
    """Grade exercise ``name`` of ``folder`` in a child process that is killed after ``time_limit`` seconds.

    Returns
    -------
    Result
    """
    exercise = EXERCISES[name]
    command = [sys.executable, "-m", "minivae.exercises", "_grade", str(folder), name, "--seed", str(seed)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=time_limit)
    except subprocess.TimeoutExpired:
        return Result(name, max_score=float(exercise.points), status="time limit",
                      lines=[f"error: time limit: grading took more than {time_limit:g} s (an infinite loop?); "
                             f"graded zero"])
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            data.pop("output", None)
            return Result(**data)
    detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Result(name, max_score=float(exercise.points), status="error",
                  lines=[f"error: the grader's process ended with code {done.returncode}: {detail}"])
