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
"""

import gzip
import math
import os
import re
import struct
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
    opener = gzip.open if _is_gzip_name(path) else open
    with opener(path, "rb") as f:
        data = f.read()
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


def _is_number(field):
    try:
        float(field)
    except ValueError:
        return False
    return True


def _load_text(path):
    """Read comma- or whitespace-separated numbers into float64 ``(n, d)``, skipping a header."""
    opener = gzip.open if _is_gzip_name(path) else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    data_lines = [line for line in lines if line.strip()]
    if not data_lines:
        raise ValueError(f"text file {path!r} holds no data")
    delimiter = "," if "," in data_lines[0] else None  # None: any run of whitespace
    first_fields = [field.strip() for field in data_lines[0].split(delimiter)]
    if not all(_is_number(field) for field in first_fields):
        data_lines = data_lines[1:]  # a non-numeric first line is a header
        if not data_lines:
            raise ValueError(f"text file {path!r} holds a header line but no data rows")
        delimiter = "," if "," in data_lines[0] else None
    try:
        return np.loadtxt(data_lines, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"could not parse {path!r} as rows of numbers: {error}") from error


def _load_npz(path, key):
    """Pick one array out of an ``.npz`` archive (``key``, else "x", else the only one)."""
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        if key is not None:
            if not isinstance(key, str):
                raise TypeError(f"key must be a str or None; got {type(key).__name__}")
            if key not in keys:
                raise ValueError(f"key {key!r} is not in {path!r}; its arrays are {keys}")
            chosen = key
        elif "x" in keys:
            chosen = "x"
        elif len(keys) == 1:
            chosen = keys[0]
        else:
            raise ValueError(
                f"{path!r} holds {len(keys)} arrays {keys} and none is named 'x'; pass key= to choose one"
            )
        return archive[chosen]


def load_array(path, key=None):
    """Load a user's data set as a 2-D array, one example per row.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Its format is chosen from the name:

        * ``.npy``: a NumPy array (loaded with ``allow_pickle=False``);
        * ``.npz``: the array named ``key``; without ``key``, the array named ``"x"`` if there is
          one, else the only array;
        * ``.csv``, ``.txt``, ``.csv.gz``, ``.txt.gz``: rows of comma- or whitespace-separated
          numbers; a first line that is not all numbers is taken as a header and skipped;
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
        For an unsupported extension, a bad ``key``, unparsable text, an IDX file whose size does
        not match its header, an object (pickled) array, or an array with no dimension.
    """
    path = _check_existing_file(path)
    fmt = _file_format(path)
    if key is not None and fmt != "npz":
        raise ValueError(f"key is only used for .npz files; got key={key!r} for {path!r}")
    if fmt == "npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(
                f"could not load {path!r} with allow_pickle=False (object arrays are refused "
                f"because unpickling can run arbitrary code): {error}"
            ) from error
    elif fmt == "npz":
        try:
            x = _load_npz(path, key)
        except ValueError as error:
            if "allow_pickle" not in str(error):
                raise
            raise ValueError(
                f"could not load {path!r} with allow_pickle=False (object arrays are refused "
                f"because unpickling can run arbitrary code): {error}"
            ) from error
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
