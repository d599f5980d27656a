"""The exercises and their autograder: full marks for the solutions, zero for the blanks, every known
mistake named, no solution in the student's folder, robust grading (syntax errors, import errors, hangs)."""

import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from minivae import exercises
from minivae.exercises import EXERCISES, source
from minivae.exercises.cli import main as exercises_main

ALL = list(EXERCISES)
MISTAKES = [(name, mistake.name) for name, exercise in EXERCISES.items() for mistake in exercise.mistakes]
SEED = 3


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("solutions")
    exercises.make(folder, "all", seed=SEED, solutions=True, force=True)
    return folder


@pytest.fixture(scope="module")
def blanks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blanks")
    exercises.make(folder, "all", seed=SEED, force=True)
    return folder


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------

def test_list_has_the_issues_exercises_grouped():
    groups = exercises.list_exercises()
    assert set(groups) == {"core", "family"}
    core = {name for name, _ in groups["core"]}
    family = {name for name, _ in groups["family"]}
    assert {"linear_backward", "relu_backward", "leaky_relu_backward", "tanh_backward", "sigmoid_backward",
            "reparameterize", "kl_standard_normal", "gaussian_log_prob", "bernoulli_log_prob",
            "categorical_log_prob", "elbo_backward", "sgd_momentum", "adam", "adamax", "log_likelihood",
            "ppca_fit", "ppca_log_likelihood"} <= core
    assert {"mixture_of_gaussians", "vamp_prior", "iwae_gradient", "kl_diagonal_gaussians"} <= family
    assert core | family == set(EXERCISES)


def test_the_issues_mistakes_are_recognised_by_name():
    known = set(MISTAKES)
    assert {("reparameterize", "missing_half"), ("reparameterize", "exp_logvar_as_std"),
            ("categorical_log_prob", "sign"), ("negative_elbo", "batch_size"), ("iwae_gradient", "batch_size"),
            ("kl_standard_normal", "wrong_axis"), ("linear_backward", "wrong_axis"), ("logsumexp", "no_max"),
            ("log_softmax", "no_max"), ("log_likelihood", "no_max"), ("adam", "no_bias_correction"),
            ("ppca_fit", "n_minus_1")} <= known
    assert all(exercise.mistakes for exercise in EXERCISES.values())


def test_every_target_has_solution_markers_in_the_library():
    for exercise in EXERCISES.values():
        for target in exercise.targets:
            code = source.solution_lines(target.path, target.label)
            assert code, f"{target.path} [{target.label}] has no marked solution"


def test_the_seed_varies_the_cases_and_fixes_them():
    def shapes(name, seed):
        exercise = EXERCISES[name]
        return [{key: np.shape(value) for key, value in case.items()} for case in exercise.cases(exercise.rng(seed))]

    names = ["linear_backward", "reparameterize", "ppca_fit", "mixture_of_gaussians"]
    assert [shapes(name, 1) for name in names] == [shapes(name, 1) for name in names]
    assert any(shapes(name, seed) != shapes(name, 0) for name in names for seed in range(1, 6))
    first, again = (EXERCISES["adam"].cases(EXERCISES["adam"].rng(7))[0] for _ in range(2))
    np.testing.assert_array_equal(first["p"], again["p"])


# --------------------------------------------------------------------------------------------------
# Full marks, zero, and the named mistakes, for every exercise
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_the_solution_scores_full_marks(solutions, name):
    result = exercises.grade_folder_exercise(solutions, name, SEED)
    assert result.passed and result.score == result.max_score, result.output
    assert result.worst_error < 1e-5
    assert result.output.startswith("pass")


@pytest.mark.parametrize("name", ALL)
def test_a_blank_scores_zero_with_a_not_implemented_line(blanks, name):
    result = exercises.grade_folder_exercise(blanks, name, SEED)
    assert not result.passed and result.score == 0
    assert result.status == "not implemented"
    assert result.output.startswith("not implemented:") and name in result.output


def _injected(name, mistake_name, folder):
    """Write the solution of exercise ``name`` with the mistake injected, as the student's file in ``folder``."""
    exercise = EXERCISES[name]
    mistake = next(m for m in exercise.mistakes if m.name == mistake_name)
    items = [(t.path, t.label, t.todos, name) for t in exercise.targets]
    text = source.student_file(items, "injected", solutions=True)
    edits = mistake.inject
    assert edits, f"{name}/{mistake_name} has no injection"
    for path, replacements in edits.items():
        for old, new in replacements:
            assert old in text, f"{name}/{mistake_name}: {old!r} is not in the solution of {path}"
            text = text.replace(old, new)
    (folder / f"{exercise.file_name}.py").write_text(text)
    return mistake


@pytest.mark.parametrize("name, mistake_name", MISTAKES)
def test_each_known_mistake_fails_with_the_hint_that_names_it(tmp_path, name, mistake_name):
    mistake = _injected(name, mistake_name, tmp_path)
    result = exercises.grade_folder_exercise(tmp_path, name, SEED)
    assert not result.passed and result.score == 0, result.output
    assert result.mistake == mistake_name, result.output
    assert f"hint ({mistake_name}): {mistake.hint}" in result.output


def test_a_half_done_exercise_names_the_missing_function_and_an_imported_solution_scores_zero():
    import minivae.ops as ops

    def reparameterize_backward(dz, cache):
        raise NotImplementedError("reparameterize_backward (exercise reparameterize): fill in the TODO")

    half = types.SimpleNamespace(reparameterize=lambda mu, logvar, eps: ops.reparameterize(mu, logvar, eps),
                                 reparameterize_backward=reparameterize_backward,
                                 __file__="reparameterize.py")
    result = exercises.grade("reparameterize", half, SEED)
    assert result.score == 0 and result.status == "not implemented"
    assert "not implemented: reparameterize_backward (exercise reparameterize)" in result.output
    copied = types.SimpleNamespace(linear_backward=ops.linear_backward, __file__="linear_backward.py")
    result = exercises.grade("linear_backward", copied, SEED)
    assert result.score == 0 and "imports linear_backward from minivae instead of defining it" in result.output


def test_no_hint_for_an_unknown_mistake_and_the_problem_is_shown():
    def linear_backward(dout, cache, need_dx=True):
        x, W = cache
        return dout @ W.T, x.T @ dout, 2 * dout.sum(axis=0)

    result = exercises.grade("linear_backward", types.SimpleNamespace(linear_backward=linear_backward), SEED)
    assert not result.passed and result.mistake is None
    assert re.search(r"db: relative error 3\.3e-01 against the reference", result.output)
    assert re.search(r"db: relative error .* against centered finite differences of your forward", result.output)


def test_shape_dtype_and_mutation_are_checked():
    def shapes(dout, cache, need_dx=True):
        x, W = cache
        return dout @ W.T, x.T @ dout, dout.sum(axis=0, keepdims=True)

    def single(dout, cache, need_dx=True):
        x, W = cache
        return (dout @ W.T).astype(np.float32), x.T @ dout, dout.sum(axis=0)

    def mutates(dout, cache, need_dx=True):
        x, W = cache
        grads = dout @ W.T, x.T @ dout, dout.sum(axis=0)
        x[...] = 0
        return grads

    outputs = {fn.__name__: exercises.grade("linear_backward", types.SimpleNamespace(linear_backward=fn), SEED).output
               for fn in (shapes, single, mutates)}
    assert re.search(r"db: shape \(1, \d\), expected \(\d,\)", outputs["shapes"])
    assert "dx: dtype float32, expected float64" in outputs["single"]
    assert "the input x was changed in place" in outputs["mutates"]


def test_the_backward_is_checked_against_the_students_own_forward():
    """A correct backward of a wrong forward fails on finite differences, not on the reference alone."""
    import minivae.ops as ops

    def kl_standard_normal(mu, logvar):
        return ops.kl_standard_normal(mu, logvar)[0] + 0.1 * np.sum(mu, axis=-1), (mu, np.exp(logvar))

    def kl_standard_normal_backward(dkl, cache):
        return ops.kl_standard_normal_backward(dkl, cache)

    student = types.SimpleNamespace(kl_standard_normal=kl_standard_normal,
                                    kl_standard_normal_backward=kl_standard_normal_backward)
    result = exercises.grade("kl_standard_normal", student, SEED)
    assert "dmu: relative error" in result.output and "finite differences of your forward" in result.output
    assert "dlogvar: relative error" not in result.output


# --------------------------------------------------------------------------------------------------
# The folder: generated from the source, no solution in it
# --------------------------------------------------------------------------------------------------

def _leak_candidates():
    """(exercise, solution line) for every line between the markers that does not also appear outside them."""
    candidates = []
    for name, exercise in EXERCISES.items():
        for target in exercise.targets:
            text = source.function_source(target.path)
            inside = set()
            for begin, end in source.regions(text, target.label):
                inside.update(range(begin, end + 1))
            outside = {line.strip() for i, line in enumerate(text.splitlines()) if i not in inside}
            candidates += [(name, line) for line in source.solution_lines(target.path, target.label)
                           if line not in outside and len(line) > 8]
    return candidates


def _leaks(folder):
    texts = {path.name: {line.split("#", 1)[0].strip() for line in path.read_text().splitlines()}
             for path in folder.iterdir() if path.is_file()}
    return [(name, line, file) for name, line in _leak_candidates() for file, lines in texts.items() if line in lines]


def test_the_student_folder_holds_no_solution_body(blanks, solutions):
    assert len(_leak_candidates()) > 50
    assert _leaks(blanks) == []
    assert len(_leaks(solutions)) >= len({line for _, line in _leak_candidates()})  # the scan finds them when present


def test_the_student_file_is_the_librarys_function_with_the_body_blanked(blanks):
    import inspect

    import minivae.ops as ops
    text = (blanks / "linear_backward.py").read_text()
    signature_and_docstring = inspect.getsource(ops.linear_backward).split("# BEGIN SOLUTION")[0].rstrip()
    assert signature_and_docstring in text
    assert "# TODO (linear_backward): x, W = cache with x (N, in_dim)" in text
    assert 'raise NotImplementedError("linear_backward (exercise linear_backward): fill in the TODO")' in text
    compile(text, "linear_backward.py", "exec")
    assert json.loads((blanks / "assignment.json").read_text())["seed"] == SEED
    assert "python -m pytest" in (blanks / "README.md").read_text()


def test_make_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"unknown exercise 'linear_backwards'; the exercises are: linear_backward, "):
        exercises.make(tmp_path / "a", ["linear_backwards"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty.*--force"):
        exercises.make(tmp_path / "full", "adam")
    written = exercises.make(tmp_path / "full", "adam", force=True)
    assert (tmp_path / "full" / "adam.py") in written and (tmp_path / "full" / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="seed must be an integer ≥ 0; got -1"):
        exercises.make(tmp_path / "b", "adam", seed=-1)
    with pytest.raises(FileNotFoundError, match="not an assignment folder"):
        exercises.check(tmp_path / "full" / "nothing")


def test_make_takes_groups_and_shares_the_activation_file(tmp_path):
    exercises.make(tmp_path, "relu_backward,tanh_backward")
    assert sorted(path.name for path in tmp_path.glob("*.py")) == ["activation_backward.py", "test_assignment.py"]
    text = (tmp_path / "activation_backward.py").read_text()
    assert "TODO (relu_backward)" in text and "TODO (tanh_backward)" in text
    assert "return np.where(a > 0, da, da * da.dtype.type(slope))" in text  # leaky ReLU is not in the set
    assert exercises.check_names("family") == [n for n, e in EXERCISES.items() if e.group == "family"]


# --------------------------------------------------------------------------------------------------
# check: robust grading in child processes, the table and results.json
# --------------------------------------------------------------------------------------------------

def test_check_survives_syntax_errors_import_errors_and_hangs(tmp_path, capsys):
    names = ["linear_backward", "kl_standard_normal", "reparameterize", "logsumexp", "adam"]
    exercises.make(tmp_path, names, seed=1, solutions=True)
    (tmp_path / "linear_backward.py").write_text((tmp_path / "linear_backward.py").read_text()
                                                 .replace("x, W = cache", "x, W = = cache"))
    (tmp_path / "kl_standard_normal.py").write_text("import minivae.no_such_module\n"
                                                    + (tmp_path / "kl_standard_normal.py").read_text())
    (tmp_path / "reparameterize.py").write_text((tmp_path / "reparameterize.py").read_text()
                                                .replace("std = np.exp(0.5 * logvar)", "while True:\n        pass"))
    (tmp_path / "adam.py").write_text((tmp_path / "adam.py").read_text().replace("m *= beta1", "m *= 0.0"))
    report = exercises.check(tmp_path, time_limit=4)
    printed = capsys.readouterr().out
    tests = {test["name"].split(":")[0]: test for test in report["tests"]}
    assert "syntax error, line" in tests["linear_backward"]["output"]
    assert "x, W = = cache" in tests["linear_backward"]["output"]
    assert "could not be imported: ModuleNotFoundError" in tests["kl_standard_normal"]["output"]
    assert "time limit" in tests["reparameterize"]["output"]
    assert tests["logsumexp"]["score"] == 1 and tests["logsumexp"]["status"] == "passed"
    assert tests["adam"]["score"] == 0 and "relative error" in tests["adam"]["output"]
    assert report["score"] == 1 and report["max_score"] == 5
    assert re.search(r"logsumexp\s+pass\s+\d\.\de-\d\d", printed)
    assert re.search(r"reparameterize\s+time limit", printed) and "score: 1 / 5" in printed

    written = json.loads((tmp_path / "results.json").read_text())
    assert written == report
    # Gradescope's autograder format: a score, and tests with name, score, max_score, output
    assert isinstance(written["score"], (int, float))
    assert isinstance(written["tests"], list) and len(written["tests"]) == len(names)
    for test in written["tests"]:
        assert {"name", "score", "max_score", "output"} <= set(test)
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert 0 <= test["score"] <= test["max_score"]


def test_the_folder_grades_itself_outside_the_checkout(tmp_path):
    """Built in a temporary folder, graded by `python -m pytest` there and by the command."""
    names = "linear_backward,kl_standard_normal,bernoulli_log_prob"
    blank, solved = tmp_path / "hw", tmp_path / "hw-solutions"
    assert exercises_main(["make", str(blank), "--set", names, "--seed", "11"]) == 0
    assert exercises_main(["make", str(solved), "--set", names, "--seed", "11", "--solutions"]) == 0

    def run(*args, cwd):
        return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)

    graded = run("-m", "pytest", cwd=solved)
    assert graded.returncode == 0 and "3 passed" in graded.stdout, graded.stdout + graded.stderr
    failing = run("-m", "pytest", cwd=blank)
    assert failing.returncode == 1 and "3 failed" in failing.stdout
    assert "not implemented: linear_backward (exercise linear_backward): fill in the TODO" in failing.stdout
    checked = run("-m", "minivae.exercises", "check", ".", cwd=solved)
    assert checked.returncode == 0 and "score: 3 / 3" in checked.stdout, checked.stdout + checked.stderr
    assert json.loads((solved / "results.json").read_text())["score"] == 3
    checked = run("-m", "minivae.exercises", "check", str(blank), cwd=tmp_path)
    assert checked.returncode == 1 and "score: 0 / 3" in checked.stdout and "not implemented" in checked.stdout


def test_the_command_lists_and_refuses_with_a_clear_error(capsys):
    assert exercises_main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "core:" in listed and "family:" in listed and "ppca_fit" in listed
    assert exercises_main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"][0] == "kl_diagonal_gaussians"
    with pytest.raises(SystemExit) as exit_:
        exercises_main(["make", "somewhere", "--set", "adams"])
    assert exit_.value.code == 2
    assert "unknown exercise 'adams'; the exercises are: " in capsys.readouterr().err


def test_add_parser_plugs_into_a_parent_parser(tmp_path, capsys):
    import argparse

    from minivae.exercises import cli
    parser = argparse.ArgumentParser(prog="minivae")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["exercises", "make", str(tmp_path / "x"), "--set", "adam", "--seed", "4"])
    assert args.run(args) == 0
    assert json.loads((tmp_path / "x" / "assignment.json").read_text())["seed"] == 4


def test_grading_runs_on_the_numpy_path_only():
    """Grading every exercise never imports the compiled kernels (nor numba)."""
    code = ("import sys\n"
            "from minivae import exercises\n"
            "assert all(exercises.grade(name, None, 0).passed for name in exercises.EXERCISES)\n"
            "print(sorted(name for name in sys.modules if name.startswith(('minivae.kernels', 'numba'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "MINIVAE_BACKEND": "numba"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
