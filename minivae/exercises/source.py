"""The student's files, generated from the library's own source between the solution markers.

A body an instructor may blank out sits, in the library, between two comment lines::

    # BEGIN SOLUTION            (or "# BEGIN SOLUTION relu": a label, for one branch of a function)
    ...the lines that compute the result...
    # END SOLUTION

The student's copy of a function is the library's source with each selected region replaced by a
TODO (the shapes and what to return) and ``raise NotImplementedError``; the signature, the
docstring and the lines outside the markers are copied as they are. So the exercise is always the
code that the library's tests check, and cannot drift from it.
"""

import ast
import builtins
import importlib
import inspect
import textwrap
import types

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"


def resolve(path):
    """The object at ``"module:qualname"`` (``"minivae.priors:VampPrior.log_prob"``), with its module."""
    module_name, _, qualname = path.partition(":")
    module = importlib.import_module(module_name)
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return module, obj


def function_source(path):
    """The source of the function or method at ``path``, as written in the library (with its indentation)."""
    _, obj = resolve(path)
    return inspect.getsource(obj)


def regions(source, label=None):
    """The solution regions of ``source`` with ``label`` (None: the unlabelled ones), as line ranges.

    Returns
    -------
    list of (begin, end): the indices of the BEGIN and END marker lines in ``source.splitlines()``
    """
    found, begin = [], None
    for i, line in enumerate(source.splitlines()):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if begin is not None:
                raise ValueError(f"nested {BEGIN!r} at line {i + 1}")
            begin, region_label = i, stripped[len(BEGIN):].strip() or None
        elif stripped.startswith(END):
            if begin is None:
                raise ValueError(f"{END!r} without {BEGIN!r} at line {i + 1}")
            if region_label == label:
                found.append((begin, i))
            begin = None
    if begin is not None:
        raise ValueError(f"{BEGIN!r} at line {begin + 1} is never closed")
    return found


def solution_lines(path, label=None):
    """The code lines between the markers of one target (stripped, comments and blank lines left out)."""
    lines = function_source(path).splitlines()
    code = []
    for begin, end in regions("\n".join(lines), label):
        for line in lines[begin + 1:end]:
            stripped = line.split("#", 1)[0].strip()
            if stripped:
                code.append(stripped)
    return code


def blank(source, label, todos, exercise, function):
    """``source`` with its regions of ``label`` replaced by a TODO and ``raise NotImplementedError``.

    Parameters
    ----------
    source : str, a function's source
    label : str or None, which regions
    todos : list of str, the TODO of each region in order (the last one repeats)
    exercise : str, the exercise's name (in the TODO and the error message)
    function : str, the function's name (in the error message)
    """
    lines = source.splitlines()
    found = regions(source, label)
    if not found:
        raise ValueError(f"no solution region labelled {label!r} in:\n{source}")
    for index, (begin, end) in reversed(list(enumerate(found))):
        indent = lines[begin][:len(lines[begin]) - len(lines[begin].lstrip())]
        todo = todos[min(index, len(todos) - 1)].strip().splitlines()
        new = [f"{indent}# TODO ({exercise}): {todo[0]}"] + [f"{indent}#   {line}" for line in todo[1:]]
        new.append(f'{indent}raise NotImplementedError("{function} (exercise {exercise}): fill in the TODO")')
        lines[begin:end + 1] = new
    return "\n".join(lines) + "\n"


def global_names(source, module):
    """The names ``source`` reads from the globals of ``module`` (not builtins), sorted."""
    tree = ast.parse(textwrap.dedent(source))
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    namespace = vars(module)
    return sorted(name for name in names
                  if name in namespace and getattr(builtins, name, None) is not namespace[name])


def import_line(name, module):
    """The import statement that binds ``name`` as ``module`` binds it."""
    value = vars(module)[name]
    if isinstance(value, types.ModuleType):
        parent, _, last = value.__name__.rpartition(".")
        if value.__name__ == name:
            return f"import {name}"
        if last == name and parent:
            return f"from {parent} import {name}"
        return f"import {value.__name__} as {name}"
    return f"from {module.__name__} import {name}"


def student_file(items, header, solutions=False):
    """The text of one student file.

    Parameters
    ----------
    items : list of (target path, label, todos, exercise name): what this file blanks out
    header : str, the module docstring
    solutions : bool; True keeps the solutions (the instructor's copy)

    Returns
    -------
    str, Python source: imports, then the functions and classes (a class subclasses the library's,
    so that the methods not given here are inherited)
    """
    # group the targets by top-level object: a function, or a class with its methods
    objects = {}  # top-level name -> (module, {member path: [(label, todos, exercise)]})
    for path, label, todos, exercise in items:
        module_name, _, qualname = path.partition(":")
        top = qualname.split(".")[0]
        module = importlib.import_module(module_name)
        entry = objects.setdefault(top, (module, {}))
        entry[1].setdefault(path, []).append((label, todos, exercise))

    imports, blocks = {"import numpy as np"}, []
    for top, (module, members) in objects.items():
        sources = []
        for path, selections in members.items():
            source = function_source(path)
            for name in global_names(source, module):
                if name not in objects:
                    imports.add(import_line(name, module))
            if not solutions:
                for label, todos, exercise in selections:
                    source = blank(source, label, todos, exercise, path.rpartition(":")[2])
            sources.append(source.rstrip("\n") + "\n")
        if inspect.isclass(getattr(module, top)):
            alias = f"_library_{module.__name__.rpartition('.')[2]}"
            imports.add(f"import {module.__name__} as {alias}")
            blocks.append(f"class {top}({alias}.{top}):\n"
                          f'    """Your {top}: the methods below replace the library\'s; the others are inherited."""\n\n'
                          + "\n".join(sources))
        else:
            blocks.append("\n".join(sources))
    ordered = sorted(imports, key=lambda line: (not line.startswith("import "), line))
    return f'"""{header}"""\n\n' + "\n".join(ordered) + "\n\n\n" + "\n\n".join(blocks)
