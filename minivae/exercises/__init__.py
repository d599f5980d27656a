"""Exercises and an autograder: gradient-check assignments made from the library's own code.

The solutions are minivae's functions: the bodies an instructor may blank out sit between
``# BEGIN SOLUTION`` and ``# END SOLUTION`` comment lines in the library's source, and the student's
files are generated from that source, so they cannot drift from the code the tests check.

    >>> from minivae import exercises
    >>> exercises.list_exercises()                       # {"core": [(name, title), ...], "family": [...]}
    >>> exercises.make("hw1", ["linear_backward", "reparameterize"], seed=7)
    >>> report = exercises.check("hw1")                  # a table, and hw1/results.json (Gradescope)

From the command line: ``python -m minivae.exercises list | make DIR --set NAMES | check DIR``.
Grading runs on the NumPy path only (:mod:`minivae.ops` and the classes above it, never the kernels).
"""

from .assignment import check, check_names, list_exercises, make, read_assignment, table
from .grading import Result, grade, grade_folder_exercise, grade_in_subprocess, load_student_file, relative_error
from .registry import EXERCISES, GROUPS

__all__ = ["EXERCISES", "GROUPS", "Result", "check", "check_names", "grade", "grade_folder_exercise",
           "grade_in_subprocess", "list_exercises", "load_student_file", "make", "read_assignment",
           "relative_error", "table"]
