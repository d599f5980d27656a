"""Writing a user's files so that nothing is lost: atomic writes and output folders.

A file that is being written is never the file a user sees. Every file goes first to a temporary
name in the same folder, is flushed to the disk (``fsync``), and is then renamed into place with
:func:`os.replace`, which on one file system is atomic: a reader sees either the old file, whole,
or the new one, whole, never a truncated mix, whatever happens in between (a full disk, Ctrl-C,
a killed process)::

    write_text(path, text)               # one file
    with atomic_path(path) as temporary:  # for writers that want a path (np.savez, savefig)
        np.savez(temporary, **arrays)

A run that writes several files that belong together (``minivae train``: the parameters, the
history, the summary, the figures) uses an :class:`OutputFolder`: it writes all of them under
temporary names and renames them into place only when every one is complete, the summary last,
so that a run that fails half-way leaves the previous run's files as they were. Files of an
earlier run that this run does not write again are removed, so the folder holds one run.

:func:`check_output_folder` is called before any long computation: it creates the folder and
proves that a file can be written, renamed and removed there, so that a read-only folder or a
``--out`` that names a file is reported at once, not after an hour of training.

This module imports only the standard library.
"""

import errno
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

__all__ = ["TEMPORARY_PREFIX", "OutputFolder", "atomic_path", "check_output_folder", "describe_os_error",
           "write_bytes", "write_text"]

#: Temporary files are named ``TEMPORARY_PREFIX + token + "-" + final name``: hidden on Unix, with
#: the final suffix kept (``np.savez`` appends ``.npz`` otherwise, and savefig reads the format from it).
TEMPORARY_PREFIX = ".minivae-tmp-"
_PROBE_BYTES = 4096  # the check of an output folder writes, syncs and removes this many bytes


def describe_os_error(error):
    """One readable sentence for an :class:`OSError`: what failed, on which file, and why.

    >>> describe_os_error(OSError(28, "No space left on device", "run/params.npz"))
    "'run/params.npz': No space left on device (ENOSPC)"
    """
    reason = error.strerror or str(error) or type(error).__name__
    code = errno.errorcode.get(error.errno)
    if code and f"({code})" not in reason:
        reason += f" ({code})"
    if error.filename is not None:
        where = repr(os.fspath(error.filename))
        if error.filename2 is not None:
            where += f" -> {os.fspath(error.filename2)!r}"
        return f"{where}: {reason}"
    return reason


def _fsync_file(path):
    """Flush a written file's data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder):
    """Flush a folder's entries (the renames) to the disk, where the platform allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are then as durable as it makes them
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _temporary_name(path):
    path = Path(path)
    return path.with_name(f"{TEMPORARY_PREFIX}{secrets.token_hex(4)}-{path.name}")


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path):
    """A temporary path to write ``path`` through: renamed into place if the block succeeds.

    The temporary file is in the same folder as ``path`` (so the rename is atomic) and has the same
    suffix. If the block raises (including KeyboardInterrupt), the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : str or os.PathLike, the final name

    Yields
    ------
    pathlib.Path, the temporary name to write to
    """
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise
    _fsync_folder(path.parent)


def write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically; returns ``path`` as a :class:`pathlib.Path`."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)
    return Path(path)


def write_text(path, text):
    """Write ``text`` to ``path`` atomically, as UTF-8; returns ``path`` as a :class:`pathlib.Path`."""
    return write_bytes(path, text.encode("utf-8"))


def check_output_folder(path, name="--out"):
    """Make sure files can be written in the folder ``path`` (created if missing), before any work.

    Creates the folder with its parents, then writes, syncs, renames and removes a small file in it,
    so that a read-only or full disk is found now, as a one-line error, rather than after training.

    Parameters
    ----------
    path : str or os.PathLike, the output folder
    name : str, how the user gave it (an option such as ``--out``), for the messages

    Returns
    -------
    pathlib.Path, the folder

    Raises
    ------
    ValueError
        If ``path`` is an existing file, or lies under one.
    OSError
        If the folder cannot be created or written; the message names the folder and the reason.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} {str(folder)!r} is a file, not a folder; give a folder for the outputs")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name} {str(folder)!r} lies under {str(parent)!r}, which is a file, "
                                 f"not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _temporary_name(folder / "write-check")
        try:
            with open(probe, "wb") as file:
                file.write(b"\0" * _PROBE_BYTES)
            _fsync_file(probe)
            renamed = _temporary_name(probe)
            os.replace(probe, renamed)
            probe = renamed
        finally:
            _remove_quietly(probe)
    except OSError as error:
        raise OSError(error.errno, f"{name} {str(folder)!r} is not a folder minivae can write to: "
                                   f"{describe_os_error(error)}") from error
    return folder


class OutputFolder:
    """The files of one run, written under temporary names and renamed into place together.

    Parameters
    ----------
    folder : str or os.PathLike, an existing folder (see :func:`check_output_folder`)
    owned : iterable of str, the names of every file a run of this kind may write; at
        :meth:`commit`, those of them that this run did not write (an earlier run's figures after
        ``--no-figures``) are removed, so that the folder holds one run and nothing older

    Examples
    --------
    >>> folder = OutputFolder(out, owned=["params.npz", "summary.json", "curves.png"])   # doctest: +SKIP
    >>> model.save(folder.path("params.npz"))                                             # doctest: +SKIP
    >>> folder.write_text("summary.json", text)                                           # doctest: +SKIP
    >>> folder.commit(last="summary.json")   # renames both, removes an old curves.png    # doctest: +SKIP
    """

    def __init__(self, folder, owned=()):
        self.folder = Path(folder)
        self.owned = tuple(owned)
        self._pending = {}  # final name -> temporary path, in the order they were asked for

    def path(self, name):
        """The temporary path to write the file ``name`` to (the same one if asked again)."""
        if name not in self._pending:
            self._pending[name] = _temporary_name(self.folder / name)
        return self._pending[name]

    def write_text(self, name, text):
        """Write ``text`` as the file ``name`` (UTF-8), to be renamed into place at :meth:`commit`."""
        with open(self.path(name), "wb") as file:
            file.write(text.encode("utf-8"))

    def forget(self, name):
        """Drop the file ``name`` from this run (removing what was written of it), e.g. a figure
        whose drawing was interrupted."""
        temporary = self._pending.pop(name, None)
        if temporary is not None:
            _remove_quietly(temporary)

    @property
    def names(self):
        """The names of the files written so far, in order."""
        return list(self._pending)

    def commit(self, last=None):
        """Sync every written file, rename them into place (``last`` at the end), remove stale ones.

        Parameters
        ----------
        last : str or None, the file to rename last (the summary, which says what the others are)

        Returns
        -------
        list of pathlib.Path, the files now in place, in order
        """
        missing = [name for name, temporary in self._pending.items() if not temporary.exists()]
        if missing:
            self.discard()
            raise RuntimeError(f"OutputFolder.commit: {missing} were asked for but never written")
        for temporary in self._pending.values():
            _fsync_file(temporary)
        order = [name for name in self._pending if name != last] + ([last] if last in self._pending else [])
        for name in order:
            os.replace(self._pending[name], self.folder / name)
        for name in self.owned:
            if name not in self._pending:
                _remove_quietly(self.folder / name)
        for leftover in self.folder.glob(TEMPORARY_PREFIX + "*"):  # from a run killed with SIGKILL
            _remove_quietly(leftover)
        _fsync_folder(self.folder)
        written = [self.folder / name for name in order]
        self._pending = {}
        return written

    def discard(self):
        """Remove the temporary files of this run; the folder keeps what it held before."""
        for temporary in self._pending.values():
            _remove_quietly(temporary)
        self._pending = {}
