"""Data: the shipped 8x8 digits, loaders for a user's own arrays, and preprocessing.

The digits data (1797 images of 8x8 pixels with intensities 0..16, see ``minivae/data/README.md``
for the credit) ships inside the package and is read with :mod:`importlib.resources`, so it also
works from an installed wheel. Its standard split is fixed by file order::

    train: rows    0 ..  999   (1000 images)
    val:   rows 1000 .. 1349   ( 350 images)
    test:  rows 1350 .. 1796   ( 447 images)

Every loader returns a 2-D array ``x: (n, d)``, one example per row. Preprocessing turns the
integer pixels into what a likelihood expects:

* :func:`scale` divides by the largest value, giving intensities in [0, 1];
* :func:`binarize` thresholds them (or samples each pixel as a Bernoulli with that probability),
  for a Bernoulli decoder;
* :func:`dequantize` adds uniform noise to integer data, for a continuous density.

Supported file formats for :func:`load_array`: ``.npy``, ``.npz``, ``.csv``, ``.txt`` (also
gzipped as ``.csv.gz``/``.txt.gz``) and MNIST-style IDX files (``.idx``, ``*-ubyte`` such as
``train-images.idx3-ubyte``, optionally gzipped). :func:`save_idx` writes IDX files.

Files as people have them: text may start with a byte-order mark (Excel's "CSV UTF-8" does) and
be separated by commas, semicolons or whitespace; a file in another encoding, an empty cell, a
truncated ``.gz``/``.npz``/``.npy`` or a file that is not what its name says is a ValueError that
names the file (and the row and column). :func:`check_values` names the first NaN, infinite or
out-of-range value, and :func:`load_labels` / :func:`split_label_column` read class labels.
"""

import codecs
import gzip
import math
import os
import re
import struct
import zipfile
import zlib
from importlib import resources

import numpy as np

from .checks import check_rng

__all__ = [
    "DIGITS_SPLITS",
    "DIGITS_IMAGE_SHAPE",
    "DIGITS_NUM_VALUES",
    "load_digits",
    "load_array",
    "load_idx",
    "load_labels",
    "as_labels",
    "split_label_column",
    "check_values",
    "save_idx",
    "binarize",
    "scale",
    "dequantize",
    "split",
]

# --------------------------------------------------------------------------------------------
# The shipped digits
# --------------------------------------------------------------------------------------------

#: Row ranges ``[start, stop)`` of the standard split of the digits file, in file order.
DIGITS_SPLITS = {"train": (0, 1000), "val": (1000, 1350), "test": (1350, 1797)}
#: Height and width of one digit image; a row of ``x`` is the image in row-major order.
DIGITS_IMAGE_SHAPE = (8, 8)
#: Number of distinct pixel values (intensities 0..16).
DIGITS_NUM_VALUES = 17

_DIGITS_PACKAGE = "minivae"
_DIGITS_RESOURCE = ("data", "digits.csv.gz")
_DIGITS_NUM_ROWS = 1797
_DIGITS_NUM_PIXELS = DIGITS_IMAGE_SHAPE[0] * DIGITS_IMAGE_SHAPE[1]
_DIGITS_NUM_CLASSES = 10

# Parsed digits as (x, y), filled on the first call of load_digits. The arrays are made
# read-only and load_digits hands out copies, so no caller can corrupt them.
_DIGITS_CACHE = None


def _read_digits():
    """Parse the shipped ``digits.csv.gz`` into ``(x: (1797, 64) int64, y: (1797,) int64)``."""
    resource = resources.files(_DIGITS_PACKAGE)
    for part in _DIGITS_RESOURCE:
        resource = resource.joinpath(part)
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="ascii") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64, ndmin=2)
    expected_shape = (_DIGITS_NUM_ROWS, _DIGITS_NUM_PIXELS + 1)
    if table.shape != expected_shape:
        raise RuntimeError(
            f"the shipped digits file has shape {table.shape}, expected {expected_shape}; "
            "the minivae installation looks corrupted"
        )
    x = np.ascontiguousarray(table[:, :_DIGITS_NUM_PIXELS])
    y = np.ascontiguousarray(table[:, _DIGITS_NUM_PIXELS])
    if x.min() < 0 or x.max() >= DIGITS_NUM_VALUES or y.min() < 0 or y.max() >= _DIGITS_NUM_CLASSES:
        raise RuntimeError(
            "the shipped digits file holds out-of-range values; the installation looks corrupted"
        )
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_digits(split="all"):
    """Load the shipped 8x8 handwritten digits.

    The file is parsed once and cached; every call returns fresh copies, so modifying the result
    never affects later calls.

    Parameters
    ----------
    split : {"all", "train", "val", "test"}, default "all"
        Which rows to return: everything (1797 images) or one part of the standard split
        (:data:`DIGITS_SPLITS`: 1000 / 350 / 447 images, in file order).

    Returns
    -------
    x : ndarray of int64, shape (n, 64)
        Pixel intensities 0..16, each row an 8x8 image in row-major order
        (``x[i].reshape(DIGITS_IMAGE_SHAPE)``).
    y : ndarray of int64, shape (n,)
        Class labels 0..9.

    Raises
    ------
    ValueError
        If ``split`` is not one of the names above.
    """
    global _DIGITS_CACHE
    valid = ("all",) + tuple(DIGITS_SPLITS)
    if not isinstance(split, str) or split not in valid:
        raise ValueError(f"split must be one of {valid}; got {split!r}")
    if _DIGITS_CACHE is None:
        _DIGITS_CACHE = _read_digits()
    x_all, y_all = _DIGITS_CACHE
    start, stop = (0, _DIGITS_NUM_ROWS) if split == "all" else DIGITS_SPLITS[split]
    return x_all[start:stop].copy(), y_all[start:stop].copy()


# --------------------------------------------------------------------------------------------
# IDX files (the MNIST format)
# --------------------------------------------------------------------------------------------

# IDX layout: two zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian uint32, then the data in C order, big-endian.
_IDX_CODE_TO_DTYPE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_DTYPE_TO_CODE = {dtype.newbyteorder("="): code for code, dtype in _IDX_CODE_TO_DTYPE.items()}
_IDX_MAX_DIM = 2**32 - 1  # each dimension is stored as a uint32
_IDX_MAX_NDIM = 255  # the number of dimensions is stored in one byte
_NPY_MAGIC = b"\x93NUMPY"  # the first six bytes of every .npy file


def _check_path(path, name="path"):
    """Return ``path`` as a str, raising TypeError if it is not path-like."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike; got {type(path).__name__}")
    return os.fspath(path)


def _check_existing_file(path, name="path"):
    """Return ``path`` as a str, raising FileNotFoundError if it is not an existing file."""
    path = _check_path(path, name)
    if not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"{name} {path!r} {what}")
    return path


def _is_gzip_name(path):
    return path.lower().endswith(".gz")


def load_idx(path):
    """Read an IDX file (the MNIST format), keeping all of its dimensions.

    Parameters
    ----------
    path : str or os.PathLike
        The file; it is gunzipped on the fly when its name ends with ``.gz``.

    Returns
    -------
    array : ndarray, shape as declared in the header, e.g. (n, 28, 28) for MNIST images
        In native byte order, with the dtype given by the header's type code: 0x08 uint8,
        0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing file.
    ValueError
        If the magic number is not an IDX one, or the data size does not match the header.
    """
    path = _check_existing_file(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"IDX file {path!r} is {len(data)} bytes long, too short for the 4-byte magic number"
        )
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_CODE_TO_DTYPE:
        known = ", ".join(
            f"0x{c:02X} ({d.newbyteorder('=').name})" for c, d in _IDX_CODE_TO_DTYPE.items()
        )
        raise ValueError(
            f"{path!r} is not an IDX file: magic number 0x{data[:4].hex().upper()}; expected two zero "
            f"bytes, a type code among {known}, and the number of dimensions"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"IDX file {path!r} declares {ndim} dimensions ({header_size}-byte header) "
            f"but is only {len(data)} bytes long"
        )
    shape = struct.unpack(">" + "I" * ndim, data[4:header_size])
    dtype = _IDX_CODE_TO_DTYPE[code]
    count = math.prod(shape)
    expected_bytes = count * dtype.itemsize
    actual_bytes = len(data) - header_size
    if actual_bytes != expected_bytes:
        raise ValueError(
            f"IDX file {path!r}: the header declares shape {shape} of {dtype.newbyteorder('=').name} "
            f"({expected_bytes} data bytes) but the file holds {actual_bytes} data bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def save_idx(path, array):
    """Write an array as an IDX file (the MNIST format).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; it is gzipped when the name ends with ``.gz`` (with a zero timestamp,
        so the same array gives the same bytes).
    array : array_like, shape (d_1, ..., d_k), 1 <= k <= 255, each d_i < 2**32
        dtype uint8, int8, int16, int32, float32 or float64 (bool is stored as uint8). Other
        dtypes, such as int64, are refused rather than silently cast: cast them first, e.g.
        ``array.astype(np.int32)``.

    Returns
    -------
    None

    Raises
    ------
    TypeError
        If ``path`` is not path-like or the dtype has no IDX type code.
    ValueError
        If ``array`` has no dimension, more than 255, or a dimension too large for the header.
    """
    path = _check_path(path)
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    native = array.dtype.newbyteorder("=") if array.dtype.kind in "biuf" else array.dtype
    if native not in _IDX_DTYPE_TO_CODE:
        supported = ", ".join(d.name for d in _IDX_DTYPE_TO_CODE)
        raise TypeError(
            f"array has dtype {array.dtype}, which IDX cannot store; supported: {supported} "
            "(cast first, e.g. array.astype(np.int32))"
        )
    if not 1 <= array.ndim <= _IDX_MAX_NDIM:
        raise ValueError(f"array must have between 1 and {_IDX_MAX_NDIM} dimensions; got {array.ndim}")
    if max(array.shape) > _IDX_MAX_DIM:
        raise ValueError(f"array has shape {array.shape}; IDX stores each dimension as a uint32 (< 2**32)")
    code = _IDX_DTYPE_TO_CODE[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    body = np.ascontiguousarray(array, dtype=_IDX_CODE_TO_DTYPE[code]).tobytes()
    if _is_gzip_name(path):
        with gzip.GzipFile(filename=path, mode="wb", mtime=0) as f:
            f.write(header + body)
    else:
        with open(path, "wb") as f:
            f.write(header + body)


# --------------------------------------------------------------------------------------------
# A user's own data
# --------------------------------------------------------------------------------------------

# An IDX name: ".idx", ".idx3", or anything ending in "-ubyte" such as "train-images.idx3-ubyte".
_IDX_NAME = re.compile(r"(\.idx\d*|-ubyte)$")
_SUPPORTED_FORMATS = (
    ".npy, .npz, .csv, .txt, .csv.gz, .txt.gz, and IDX files (.idx, *-ubyte such as "
    ".idx3-ubyte / .idx1-ubyte, each optionally followed by .gz)"
)


def _file_format(path):
    """Return "npy", "npz", "text" or "idx" from a file name, or raise ValueError."""
    name = os.path.basename(path).lower()
    gz = name.endswith(".gz")
    base = name[: -len(".gz")] if gz else name
    if base.endswith((".csv", ".txt")):
        return "text"
    if _IDX_NAME.search(base):
        return "idx"
    if not gz and base.endswith(".npy"):
        return "npy"
    if not gz and base.endswith(".npz"):
        return "npz"
    raise ValueError(f"path {path!r} has an unsupported extension; supported: {_SUPPORTED_FORMATS}")


def _read_bytes(path):
    """The bytes of ``path``, gunzipped when its name ends in ``.gz``; a truncated or corrupt gzip
    stream is a ValueError that says so."""
    if not _is_gzip_name(path):
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError:
        raise ValueError(f"{path!r} is a truncated gzip file (it ends before the end of its compressed "
                         f"data); was it downloaded or copied completely?") from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path!r} is not a valid gzip file ({error}); it is corrupt, or its name "
                         f"ends in .gz without it being gzipped") from None


# Byte-order marks a text file may start with, and the encoding each announces. Excel's
# "CSV UTF-8" starts with the UTF-8 mark; its "Unicode text" is UTF-16 with a mark.
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16"))


def _decode_text(path, data):
    """``data`` as str: UTF-8 (ASCII included), or the encoding its byte-order mark names."""
    encoding = "utf-8"
    for mark, name in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            encoding = name
            break
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ValueError(
            f"{path!r} is not {encoding.upper().replace('-SIG', '')} text: byte 0x{data[error.start]:02x} on "
            f"line {line} is not valid in that encoding (the file was probably saved in another "
            f"encoding, such as Latin-1 or Windows-1252); save it as UTF-8 (in Excel: \"CSV UTF-8\")"
        ) from None


def _is_number(field):
    try:
        float(field)
    except ValueError:
        return False
    return True


def _delimiter(line):
    """The field separator of a line: a comma, else a semicolon, else any run of whitespace (None)."""
    if "," in line:
        return ","
    if ";" in line:
        return ";"
    return None


def _describe_bad_cell(path, lines, first_line_number, delimiter):
    """The first cell of ``lines`` that is not a number, or the first row of another length, as a
    sentence (row/line/column numbers from 1), or None if every cell parses."""
    width = None
    for index, line in enumerate(lines):
        fields = [field.strip() for field in line.split(delimiter)]
        where = f"{path!r}, data row {index + 1} (line {first_line_number + index})"
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            return f"{where} has {len(fields)} fields; the rows before it have {width}"
        for column, field in enumerate(fields, start=1):
            if field == "":
                return f"{where}, column {column} is empty (a missing value); fill it in or remove the row"
            if not _is_number(field):
                return f"{where}, column {column} holds {field[:40]!r}, which is not a number"
    return None


def _load_text(path):
    """Read comma-, semicolon- or whitespace-separated numbers into float64 ``(n, d)``, skipping a
    header line."""
    text = _decode_text(path, _read_bytes(path))
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise ValueError(f"text file {path!r} holds no data")
    delimiter = _delimiter(numbered[0][1])
    first_fields = [field.strip() for field in numbered[0][1].split(delimiter)]
    if not all(_is_number(field) for field in first_fields):
        numbered = numbered[1:]  # a non-numeric first line is a header
        if not numbered:
            raise ValueError(f"text file {path!r} holds a header line but no data rows")
        delimiter = _delimiter(numbered[0][1])
    lines = [line for _, line in numbered]
    try:
        return np.loadtxt(lines, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError as error:
        problem = _describe_bad_cell(path, lines, numbered[0][0], delimiter)
        raise ValueError(problem or f"could not parse {path!r} as rows of numbers: {error}") from None


_PICKLE_ADVICE = "object arrays are refused (allow_pickle=False) because unpickling can run arbitrary code"


def _load_npy(path):
    """The array in a ``.npy`` file; a file that is not one, or is truncated, is a ValueError."""
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise ValueError(f"{path!r} is not a .npy file: it does not start with the NumPy signature "
                         f"\\x93NUMPY (it is corrupt, or another format with a .npy name)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error):
            raise ValueError(f"{path!r} holds an object array; {_PICKLE_ADVICE}") from None
        raise ValueError(f"{path!r} is a damaged .npy file ({error}); was it written completely?") from None
    except (EOFError, OSError) as error:
        raise ValueError(f"{path!r} is a damaged .npy file ({error}); was it written completely?") from None


def _load_npz(path, key):
    """Pick one array out of an ``.npz`` archive (``key``, else "x", else the only one)."""
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key must be a str or None; got {type(key).__name__}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if key is not None:
                if key not in keys:
                    raise KeyError(key)
                chosen = key
            elif "x" in keys:
                chosen = "x"
            elif len(keys) == 1:
                chosen = keys[0]
            else:
                raise ValueError(f"{path!r} holds {len(keys)} arrays {keys} and none is named 'x'; choose "
                                 f"one with key= (on the command line, --npz-key)")
            return archive[chosen]
    except KeyError:
        raise ValueError(f"key {key!r} is not in {path!r}; its arrays are {keys}") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise ValueError(f"{path!r} is not a readable .npz archive ({error}); it is truncated or corrupt. "
                         f"Was it written completely?") from None
    except ValueError as error:
        if "pickle" in str(error):
            raise ValueError(f"{path!r} holds an object array; {_PICKLE_ADVICE}") from None
        if str(error).startswith(repr(path)):
            raise
        raise ValueError(f"{path!r} is a damaged .npz archive ({error})") from None


def load_array(path, key=None):
    """Load a user's data set as a 2-D array, one example per row.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Its format is chosen from the name:

        * ``.npy``: a NumPy array (loaded with ``allow_pickle=False``);
        * ``.npz``: the array named ``key``; without ``key``, the array named ``"x"`` if there is
          one, else the only array;
        * ``.csv``, ``.txt``, ``.csv.gz``, ``.txt.gz``: rows of comma-, semicolon- or
          whitespace-separated numbers, in UTF-8 (a byte-order mark is skipped; UTF-16 with its
          mark is read too); a first line that is not all numbers is taken as a header and skipped;
        * IDX (``.idx``, ``*-ubyte`` such as ``train-images.idx3-ubyte``, optionally ``.gz``):
          see :func:`load_idx`.
    key : str, optional
        Only for ``.npz``: the name of the array to load.

    Returns
    -------
    x : ndarray, shape (n, d)
        Text files give float64; the other formats keep the stored dtype (uint8 for MNIST).
        A 1-D array of n values becomes (n, 1); an array of shape (n, d_1, ..., d_k) is
        flattened to (n, d_1 * ... * d_k), e.g. MNIST (60000, 28, 28) -> (60000, 784).

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing file.
    ValueError
        For an unsupported extension, a bad ``key``, text in another encoding or with an empty or
        non-numeric cell (named by row and column), a truncated or corrupt ``.gz``, ``.npz`` or
        ``.npy``, an IDX file whose size does not match its header, an object (pickled) array, or
        an array with no dimension. NaN and infinite values are returned as they are: see
        :func:`check_values`.
    """
    path = _check_existing_file(path)
    fmt = _file_format(path)
    if key is not None and fmt != "npz":
        raise ValueError(f"key is only used for .npz files; got key={key!r} for {path!r}")
    if fmt == "npy":
        x = _load_npy(path)
    elif fmt == "npz":
        x = _load_npz(path, key)
    elif fmt == "text":
        x = _load_text(path)
    else:
        x = load_idx(path)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{path!r} holds an array of dtype {x.dtype}; expected numbers")
    if x.ndim == 0:
        raise ValueError(f"{path!r} holds a scalar; expected an array of shape (n,) or (n, d, ...)")
    if x.ndim == 1:
        return x.reshape(-1, 1)
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def check_values(x, name, dtype=np.float32):
    """Refuse NaN, infinite values, and values beyond the range of ``dtype``, naming the first one.

    Run it on the data as loaded, before the cast to the model's dtype: a value above
    ``np.finfo(np.float32).max`` (3.4e38) is finite in float64 but becomes infinite in float32.

    Parameters
    ----------
    x : ndarray, shape (n, d), the data as loaded
    name : str, how to name the data in the message (usually the file)
    dtype : the floating-point dtype the data will be cast to

    Returns
    -------
    x, unchanged

    Raises
    ------
    ValueError
        naming the row and column (from 1) of the first bad value and what is wrong with it.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iuf" or x.size == 0:
        return x
    limit = np.finfo(dtype).max
    finite = np.isfinite(x) if x.dtype.kind == "f" else np.ones(x.shape, dtype=bool)
    bad = ~finite
    with np.errstate(invalid="ignore"):
        bad |= finite & (np.abs(x) > limit)
    if not bad.any():
        return x
    flat = int(np.flatnonzero(bad.ravel())[0])
    row, column = divmod(flat, x.shape[1]) if x.ndim == 2 else (flat, 0)
    value = x.ravel()[flat]
    where = f"{name}: row {row + 1}, column {column + 1}"
    count = int(bad.sum())
    others = f" ({count - 1} more bad values follow)" if count > 1 else ""
    if np.isnan(value):
        raise ValueError(f"{where} is NaN (a missing value){others}; fill in or remove such rows first")
    if not np.isfinite(value):
        raise ValueError(f"{where} is {value} (infinite){others}; every value must be finite")
    raise ValueError(f"{where} is {value:.4g}, beyond the range of {np.dtype(dtype).name} "
                     f"(±{limit:.4g}){others}; rescale the data, or use float64 (--dtype float64)")


def load_labels(path, key=None, n=None):
    """Load one integer class label per example from a file, for colouring figures.

    Parameters
    ----------
    path : str or os.PathLike, any format of :func:`load_array` holding one column (or a 1-D array)
    key : str, optional, the array's name in an ``.npz``
    n : int, optional, the number of examples the labels must match

    Returns
    -------
    labels : ndarray of int64, shape (n,)

    Raises
    ------
    ValueError
        If the file holds more than one column, non-integer values, or not ``n`` labels.
    """
    labels = load_array(path, key)
    path = os.fspath(path)
    if labels.shape[1] != 1:
        raise ValueError(f"labels file {path!r} holds {labels.shape[1]} columns; expected one label per row")
    return as_labels(labels[:, 0], f"labels file {path!r}", n)


def as_labels(values, name, n=None):
    """``values`` as int64 class labels, or a ValueError naming ``name``: integers, finite, ``n`` of them."""
    values = np.asarray(values)
    if n is not None and values.shape[0] != n:
        raise ValueError(f"{name} holds {values.shape[0]} labels; the data has {n} rows")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError(f"{name} must hold integer class labels; found values such as "
                             f"{values[~(np.isfinite(values) & (values == np.round(values)))][:3].tolist()}")
    elif values.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class labels; got dtype {values.dtype}")
    return values.astype(np.int64)


def split_label_column(x, column, name):
    """Take the class labels out of the data: ``(x without the column, labels)``.

    Parameters
    ----------
    x : ndarray, shape (n, d), d ≥ 2
    column : int, 0-based index of the label column; negative counts from the end (-1: the last)
    name : str, how to name the data in messages

    Returns
    -------
    x_rest : ndarray, shape (n, d - 1)
    labels : ndarray of int64, shape (n,)
    """
    d = x.shape[1]
    if not -d <= column < d:
        raise ValueError(f"label column {column} does not exist in {name}, which has {d} columns "
                         f"(0..{d - 1}, or -1 for the last)")
    if d < 2:
        raise ValueError(f"{name} has one column; a label column would leave no data")
    index = column % d
    labels = as_labels(x[:, index], f"column {column} of {name}")
    return np.delete(x, index, axis=1), labels


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def _check_rng(rng, allow_none):
    if rng is None and allow_none:
        return
    check_rng(rng)


def _check_real(value, name):
    """Raise TypeError unless ``value`` is a real scalar (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")


def _as_numeric(x, name="x"):
    """``np.asarray(x)``, refusing anything that is not bool, integer or float."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
    return x


def _float_dtype(x):
    """The input's dtype if it is floating point, else float64."""
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)


def binarize(x, threshold=0.5, rng=None):
    """Turn intensities into 0/1 values, deterministically or by sampling.

    Parameters
    ----------
    x : array_like, shape (...), e.g. (n, d)
        Values to binarize. With ``rng`` they must lie in [0, 1] (e.g. the output of
        :func:`scale`).
    threshold : float, default 0.5
        Deterministic mode only: values strictly greater than ``threshold`` become 1.
    rng : numpy.random.Generator, optional
        None (default): deterministic ``x > threshold``. A Generator: stochastic binarization,
        each value read as a probability p becomes 1 with probability p, independently
        (``u < p`` with ``u ~ U[0, 1)``; ``threshold`` is then unused). The same seed gives the
        same output.

    Returns
    -------
    b : ndarray, same shape as x
        Values 0.0 and 1.0, in the dtype of ``x`` if it is floating point, else float64.

    Raises
    ------
    TypeError
        If ``x`` is not numeric or ``rng`` is neither None nor a Generator.
    ValueError
        If ``threshold`` is not a finite number, or (with ``rng``) ``x`` has values outside [0, 1].
    """
    x = _as_numeric(x)
    _check_rng(rng, allow_none=True)
    dtype = _float_dtype(x)
    if rng is None:
        _check_real(threshold, "threshold")
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite; got {threshold}")
        return (x > threshold).astype(dtype)
    if x.size and not (np.all(x >= 0) and np.all(x <= 1)):  # also refuses NaN
        raise ValueError(
            f"stochastic binarization reads x as probabilities, so x must lie in [0, 1]; "
            f"got values in [{np.nanmin(x)}, {np.nanmax(x)}]"
            + (" and NaN" if np.isnan(x).any() else "")
            + " (use scale(x) first)"
        )
    u = rng.random(x.shape)  # float64 uniforms: P(u < p) = p exactly up to rounding of p
    return (u < x).astype(dtype)


def scale(x, max_value=None):
    """Divide non-negative data by its largest possible value, giving values in [0, 1].

    Parameters
    ----------
    x : array_like, shape (...), e.g. (n, d)
        Non-negative finite values, at most ``max_value``.
    max_value : float, optional
        The value that maps to 1, e.g. 16 for the digits or 255 for 8-bit images. Default:
        ``x.max()``. Pass it explicitly when scaling a split, so that every split is divided by
        the same number.

    Returns
    -------
    x_scaled : ndarray, same shape as x
        ``x / max_value``, in the dtype of ``x`` if it is floating point, else float64.

    Raises
    ------
    TypeError
        If ``x`` is not numeric.
    ValueError
        If ``x`` is empty or not finite, has values outside [0, max_value], if ``max_value`` is
        not a positive finite number, or (default ``max_value``) if ``x`` is all zero.
    """
    x = _as_numeric(x)
    if x.size == 0:
        raise ValueError("x is empty; there is nothing to scale")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or infinite values")
    dtype = _float_dtype(x)
    if max_value is None:
        max_value = x.max()
        if max_value == 0:
            raise ValueError("x is all zero, so max_value cannot default to x.max(); pass max_value")
    else:
        _check_real(max_value, "max_value")
        if not (math.isfinite(max_value) and max_value > 0):
            raise ValueError(f"max_value must be a positive finite number; got {max_value}")
    x_min, x_max = x.min(), x.max()
    if x_min < 0 or x_max > max_value:
        raise ValueError(f"x must lie in [0, max_value={max_value}]; got values in [{x_min}, {x_max}]")
    return (x / dtype.type(max_value)).astype(dtype, copy=False)


def dequantize(x, rng):
    """Add uniform noise to discrete data: ``x + u`` with ``u ~ U[0, 1)`` elementwise.

    Fitting a continuous density to integer data lets it pile unbounded density on the integers;
    spreading each integer k over [k, k + 1) makes the continuous log-likelihood a lower bound
    on the discrete one.

    Parameters
    ----------
    x : array_like, shape (...), e.g. (n, d)
        Usually integer-valued, e.g. the digits' 0..16 intensities.
    rng : numpy.random.Generator
        Source of the noise; required (the same seed gives the same output).

    Returns
    -------
    x_noisy : ndarray of float64, same shape as x
        ``x <= x_noisy < x + 1``, so ``floor(x_noisy) == x`` for integer ``x``.

    Raises
    ------
    TypeError
        If ``rng`` is not a Generator or ``x`` is not numeric.
    ValueError
        If ``x`` contains NaN or infinite values.
    """
    _check_rng(rng, allow_none=False)
    x = _as_numeric(x).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or infinite values")
    u = rng.random(x.shape)
    # u can be 1 - 2**-53, and x + u then rounds up to x + 1 once x >= 1; the clamp keeps
    # every value strictly below x + 1 (the largest float64 under it), so floor recovers x.
    return np.minimum(x + u, np.nextafter(x + 1.0, -np.inf))


def _check_fraction(value, name):
    _check_real(value, name)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must lie in [0, 1); got {value}")


def split(x, y=None, val_fraction=0.1, test_fraction=0.1, rng=None):
    """Split a data set into train, validation and test parts.

    The sizes are ``n_val = round(val_fraction * n)``, ``n_test = round(test_fraction * n)``
    (halves rounded up) and ``n_train = n - n_val - n_test``; the parts follow each other in
    that order: train first, then val, then test.

    Parameters
    ----------
    x : array_like, shape (n, ...)
        The examples, one per row.
    y : array_like, shape (n, ...), optional
        Labels or targets, split along with ``x``.
    val_fraction, test_fraction : float, default 0.1
        Fractions of the rows for validation and test, each in [0, 1), summing to less than 1.
    rng : numpy.random.Generator, optional
        None (default) keeps the file order; a Generator shuffles the rows first (the same seed
        gives the same split).

    Returns
    -------
    parts : dict
        Keys "train", "val", "test". Each value is an array ``x_part: (n_part, ...)``, or a tuple
        ``(x_part, y_part)`` when ``y`` is given. Always copies, never views of ``x``.

    Raises
    ------
    TypeError
        If a fraction is not a number or ``rng`` is neither None nor a Generator.
    ValueError
        If a fraction is out of range, ``x`` has no rows dimension, ``y`` has a different number
        of rows, or the training part would be empty.
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (n, ...); got a scalar")
    n = x.shape[0]
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"y must have one entry per row of x ({n}); got shape {y.shape}")
    _check_fraction(val_fraction, "val_fraction")
    _check_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave training data; "
            f"got {val_fraction} + {test_fraction} = {val_fraction + test_fraction}"
        )
    _check_rng(rng, allow_none=True)
    n_val = math.floor(val_fraction * n + 0.5)
    n_test = math.floor(test_fraction * n + 0.5)
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"with n={n} rows, val_fraction={val_fraction} and test_fraction={test_fraction} "
            f"leave {n_train} training rows; need at least 1"
        )
    order = np.arange(n) if rng is None else rng.permutation(n)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    parts = {}
    for name, (start, stop) in bounds.items():
        rows = order[start:stop]
        parts[name] = x[rows] if y is None else (x[rows], y[rows])  # fancy indexing copies
    return parts
