"""Tests for minivae.datasets: the shipped digits, file loaders, preprocessing and splitting."""

import gzip
import hashlib
import math
import struct
from importlib import resources

import numpy as np
import pytest

from minivae.datasets import (
    DIGITS_IMAGE_SHAPE,
    DIGITS_NUM_VALUES,
    DIGITS_SPLITS,
    binarize,
    dequantize,
    load_array,
    load_digits,
    load_idx,
    save_idx,
    scale,
    split,
)

DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"


# --------------------------------------------------------------------------------------------
# Shipped digits
# --------------------------------------------------------------------------------------------


def test_shipped_digits_file_is_the_credited_one():
    data = resources.files("minivae").joinpath("data").joinpath("digits.csv.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == DIGITS_SHA256


def test_digits_constants():
    assert DIGITS_SPLITS == {"train": (0, 1000), "val": (1000, 1350), "test": (1350, 1797)}
    assert DIGITS_IMAGE_SHAPE == (8, 8)
    assert DIGITS_NUM_VALUES == 17


def test_digits_all_shapes_dtypes_ranges():
    x, y = load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.dtype == np.int64 and y.dtype == np.int64
    assert x.min() == 0 and x.max() == DIGITS_NUM_VALUES - 1
    assert set(np.unique(y)) == set(range(10))
    # First row of the file, as printed by `zcat digits.csv.gz | head -1`.
    assert x[0, :8].tolist() == [0, 0, 5, 13, 9, 1, 0, 0] and y[0] == 0
    assert y[1] == 1


@pytest.mark.parametrize("name, size", [("train", 1000), ("val", 350), ("test", 447)])
def test_digits_split_sizes_and_every_class_present(name, size):
    x, y = load_digits(name)
    assert x.shape == (size, 64) and y.shape == (size,)
    assert x.dtype == np.int64 and y.dtype == np.int64
    assert 0 <= x.min() and x.max() <= 16
    assert np.array_equal(np.unique(y), np.arange(10))
    assert np.bincount(y, minlength=10).min() >= 30  # roughly balanced, not just present


def test_digits_splits_tile_the_full_set_in_order():
    x_all, y_all = load_digits("all")
    parts = [load_digits(name) for name in ("train", "val", "test")]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), x_all)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), y_all)


def test_load_digits_returns_copies():
    x, y = load_digits("train")
    x[:] = -1
    y[:] = -1
    x_again, y_again = load_digits("train")
    assert x_again.min() == 0 and y_again.min() == 0
    x_all, _ = load_digits()
    x_all[0, 0] = 99
    assert load_digits()[0][0, 0] == 0
    assert x.flags.writeable and x_all.flags.writeable


def test_load_digits_bad_split_names_argument():
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
    with pytest.raises(ValueError, match="split"):
        load_digits(["train"])


# --------------------------------------------------------------------------------------------
# File round trips
# --------------------------------------------------------------------------------------------


@pytest.fixture
def table():
    """A small (5, 3) float64 table with non-integer and negative values."""
    return np.array(
        [[0.0, 1.5, -2.25], [3.0, 4.125, 5.0], [6.5, -7.0, 8.0], [9.0, 10.0, 11.75], [0.5, 0.25, 1e-3]]
    )


def test_npy_round_trip_and_flattening(tmp_path, table):
    path = tmp_path / "x.npy"
    np.save(path, table)
    loaded = load_array(path)
    assert loaded.dtype == np.float64 and np.array_equal(loaded, table)

    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.save(tmp_path / "images.npy", images)
    flat = load_array(str(tmp_path / "images.npy"))
    assert flat.shape == (2, 12) and flat.dtype == np.uint8
    assert np.array_equal(flat, images.reshape(2, 12))

    np.save(tmp_path / "vector.npy", np.arange(4))
    assert load_array(tmp_path / "vector.npy").shape == (4, 1)


def test_npy_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_array(path)


def test_npz_with_and_without_key(tmp_path, table):
    labels = np.arange(5)
    np.savez(tmp_path / "named_x.npz", x=table, y=labels)
    assert np.array_equal(load_array(tmp_path / "named_x.npz"), table)
    assert np.array_equal(load_array(tmp_path / "named_x.npz", key="y"), labels.reshape(5, 1))

    np.savez(tmp_path / "single.npz", images=table)
    assert np.array_equal(load_array(tmp_path / "single.npz"), table)

    np.savez(tmp_path / "ambiguous.npz", a=table, b=table)
    with pytest.raises(ValueError, match=r"'a'.*'b'"):
        load_array(tmp_path / "ambiguous.npz")
    assert np.array_equal(load_array(tmp_path / "ambiguous.npz", key="b"), table)
    with pytest.raises(ValueError, match="key 'c'"):
        load_array(tmp_path / "ambiguous.npz", key="c")


def test_key_refused_for_other_formats(tmp_path, table):
    np.save(tmp_path / "x.npy", table)
    with pytest.raises(ValueError, match="key"):
        load_array(tmp_path / "x.npy", key="x")


def _write_text(path, text):
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _as_lines(array, separator):
    return "\n".join(separator.join(repr(float(v)) for v in row) for row in array) + "\n"


@pytest.mark.parametrize("name", ["x.csv", "x.txt", "x.csv.gz"])
@pytest.mark.parametrize("header", [None, "pixel_a,pixel_b,pixel_c"])
def test_csv_round_trip_with_and_without_header(tmp_path, table, name, header):
    text = _as_lines(table, ",")
    if header is not None:
        text = header + "\n" + text
    _write_text(tmp_path / name, text)
    loaded = load_array(tmp_path / name)
    assert loaded.dtype == np.float64 and np.array_equal(loaded, table)


def test_whitespace_separated_text_with_header(tmp_path, table):
    text = "a b c\n" + _as_lines(table, " \t ")
    _write_text(tmp_path / "x.txt", text)
    assert np.array_equal(load_array(tmp_path / "x.txt"), table)


def test_np_savetxt_output_loads(tmp_path, table):
    np.savetxt(tmp_path / "x.csv", table, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "y.txt", table)
    assert np.array_equal(load_array(tmp_path / "x.csv"), table)
    assert np.array_equal(load_array(tmp_path / "y.txt"), table)


def test_single_column_text_is_n_by_1(tmp_path):
    _write_text(tmp_path / "x.csv", "value\n1\n2\n3\n")
    loaded = load_array(tmp_path / "x.csv")
    assert loaded.shape == (3, 1) and loaded[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_ragged_or_non_numeric_text_is_an_error(tmp_path):
    _write_text(tmp_path / "ragged.csv", "1,2,3\n4,5\n")
    with pytest.raises(ValueError, match="ragged.csv"):
        load_array(tmp_path / "ragged.csv")
    _write_text(tmp_path / "header_only.csv", "a,b,c\n")
    with pytest.raises(ValueError, match="no data"):
        load_array(tmp_path / "header_only.csv")


@pytest.mark.parametrize(
    "dtype, name",
    [
        (np.uint8, "train-images.idx3-ubyte"),
        (np.uint8, "t10k-images-idx3-ubyte.gz"),
        (np.int8, "x.idx"),
        (np.int16, "x.idx"),
        (np.int32, "x.idx"),
        (np.float32, "x.idx"),
        (np.float64, "x.idx.gz"),
    ],
)
def test_idx_round_trip(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(4, 3, 5), endpoint=True).astype(dtype)
    else:
        array = rng.standard_normal((4, 3, 5)).astype(dtype)
    path = tmp_path / name
    save_idx(path, array)
    loaded = load_idx(path)
    assert loaded.dtype == dtype and loaded.shape == (4, 3, 5)
    assert loaded.dtype.isnative and loaded.flags.writeable
    assert np.array_equal(loaded, array)
    flat = load_array(path)
    assert flat.shape == (4, 15) and np.array_equal(flat, array.reshape(4, 15))


def test_idx_header_matches_the_mnist_layout(tmp_path):
    labels = np.array([7, 2, 1], dtype=np.uint8)
    save_idx(tmp_path / "labels.idx1-ubyte", labels)
    raw = (tmp_path / "labels.idx1-ubyte").read_bytes()
    # MNIST label files: magic 0x00000801, then n as a big-endian uint32, then the bytes.
    assert raw == b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([7, 2, 1])
    assert load_array(tmp_path / "labels.idx1-ubyte").shape == (3, 1)

    save_idx(tmp_path / "big.idx", np.array([1.0], dtype=np.float64))
    assert (tmp_path / "big.idx").read_bytes()[4 + 4 :] == struct.pack(">d", 1.0)  # big-endian


def test_idx_gz_is_deterministic(tmp_path):
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    save_idx(tmp_path / "a.idx.gz", array)
    first = (tmp_path / "a.idx.gz").read_bytes()
    save_idx(tmp_path / "a.idx.gz", array)
    assert (tmp_path / "a.idx.gz").read_bytes() == first
    assert first[:2] == b"\x1f\x8b"  # really gzipped


def test_idx_size_mismatch_is_an_error(tmp_path):
    save_idx(tmp_path / "x.idx", np.zeros((2, 3), dtype=np.float32))
    raw = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-1])
    (tmp_path / "long.idx").write_bytes(raw + b"\x00")
    for name in ("short.idx", "long.idx"):
        with pytest.raises(ValueError, match=r"header declares shape \(2, 3\)"):
            load_idx(tmp_path / name)
        with pytest.raises(ValueError, match="header"):
            load_array(tmp_path / name)


def test_idx_bad_magic_is_an_error(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_idx(tmp_path / "bad.idx")
    (tmp_path / "tiny.idx").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="too short"):
        load_idx(tmp_path / "tiny.idx")


def test_save_idx_refuses_unsupported_dtypes(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        save_idx(tmp_path / "x.idx", np.arange(3, dtype=np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        save_idx(tmp_path / "x.idx", np.float64(1.0))
    save_idx(tmp_path / "b.idx", np.array([True, False]))  # bool is stored as uint8
    assert load_idx(tmp_path / "b.idx").tolist() == [1, 0]


def test_unknown_extension_lists_supported_ones(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"not really")
    with pytest.raises(ValueError, match=r"unsupported extension.*\.npy.*\.npz.*\.csv.*ubyte"):
        load_array(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_array(tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError, match="directory"):
        load_array(tmp_path)
    with pytest.raises(TypeError, match="path"):
        load_array(3)


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def test_binarize_deterministic():
    x = np.array([[0.0, 0.5, 0.51], [1.0, 0.2, 0.7]])
    assert binarize(x).tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    assert binarize(x, threshold=0.1).tolist() == [[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    digits = np.array([0, 7, 8, 16])
    out = binarize(digits, threshold=7)
    assert out.dtype == np.float64 and out.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert binarize(x.astype(np.float32)).dtype == np.float32


def test_binarize_stochastic_mean_matches_probabilities():
    probabilities = np.array([0.0, 0.05, 0.3, 0.5, 0.9, 1.0])
    n_samples = 20_000
    x = np.tile(probabilities, (n_samples, 1))
    b = binarize(x, rng=np.random.default_rng(0))
    assert b.shape == x.shape and b.dtype == np.float64
    assert set(np.unique(b)) <= {0.0, 1.0}
    mean = b.mean(axis=0)
    # Each column mean is Binomial(n, p) / n with standard error sqrt(p (1 - p) / n); allow 5 of
    # them (a false failure has probability ~6e-7 per column). p = 0 and p = 1 must be exact.
    standard_error = np.sqrt(probabilities * (1 - probabilities) / n_samples)
    assert np.all(np.abs(mean - probabilities) <= 5 * standard_error)
    assert mean[0] == 0.0 and mean[-1] == 1.0


def test_binarize_stochastic_is_reproducible_and_random():
    x = np.full((50, 64), 0.5)
    first = binarize(x, rng=np.random.default_rng(7))
    again = binarize(x, rng=np.random.default_rng(7))
    other = binarize(x, rng=np.random.default_rng(8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_binarize_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(np.array([0.2, 1.5]), rng=rng)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(np.array([-0.1, 0.5]), rng=rng)
    with pytest.raises(ValueError, match="NaN"):
        binarize(np.array([np.nan, 0.5]), rng=rng)
    with pytest.raises(TypeError, match="rng"):
        binarize(np.array([0.5]), rng=0)
    with pytest.raises(TypeError, match="x"):
        binarize(np.array(["a"]))


def test_scale():
    x, _ = load_digits("val")
    scaled = scale(x)
    assert scaled.dtype == np.float64 and scaled.min() == 0.0 and scaled.max() == 1.0
    assert np.array_equal(scaled * 16, x)
    assert np.allclose(scale(np.array([0, 5, 10]), max_value=20), [0.0, 0.25, 0.5])
    assert scale(np.array([1.0, 2.0], dtype=np.float32)).dtype == np.float32


def test_scale_errors():
    with pytest.raises(ValueError, match="all zero"):
        scale(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="max_value"):
        scale(np.array([1.0]), max_value=0)
    with pytest.raises(ValueError, match=r"\[0, max_value"):
        scale(np.array([1.0, 20.0]), max_value=16)
    with pytest.raises(ValueError, match=r"\[0, max_value"):
        scale(np.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match="empty"):
        scale(np.zeros((0, 3)))


def test_dequantize_adds_unit_noise_and_floors_back():
    x, _ = load_digits("test")
    noisy = dequantize(x, np.random.default_rng(0))
    assert noisy.dtype == np.float64 and noisy.shape == x.shape
    noise = noisy - x
    assert noise.min() >= 0.0 and noise.max() < 1.0
    assert np.array_equal(np.floor(noisy), x)
    # The noise is U[0, 1): mean 1/2, variance 1/12 over 447 * 64 values.
    assert abs(noise.mean() - 0.5) < 5 * math.sqrt(1 / 12 / noise.size)
    assert np.array_equal(noisy, dequantize(x, np.random.default_rng(0)))


class _AlmostOneGenerator(np.random.Generator):
    """A Generator whose uniforms are all the largest float64 below 1, the worst case."""

    def random(self, size=None, dtype=np.float64, out=None):
        return np.full(size, np.nextafter(1.0, 0.0), dtype=dtype)


def test_dequantize_stays_below_next_integer_even_for_the_largest_uniform():
    x = np.array([0, 1, 16, 255, 1_000_000])
    rng = _AlmostOneGenerator(np.random.PCG64(0))
    assert np.any(np.floor(x + rng.random(x.shape)) != x)  # the rounding hazard is real
    noisy = dequantize(x, rng)
    assert np.all(noisy < x + 1.0) and np.all(noisy > x)
    assert np.array_equal(np.floor(noisy), x)


def test_dequantize_requires_a_generator():
    with pytest.raises(TypeError, match="rng"):
        dequantize(np.array([1, 2]), None)
    with pytest.raises(TypeError, match="rng"):
        dequantize(np.array([1, 2]), np.random.RandomState(0))


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------


def test_split_sizes_and_file_order():
    x = np.arange(40).reshape(20, 2)
    parts = split(x, val_fraction=0.2, test_fraction=0.1)
    assert [parts[k].shape[0] for k in ("train", "val", "test")] == [14, 4, 2]
    assert np.array_equal(np.concatenate([parts["train"], parts["val"], parts["test"]]), x)
    parts["train"][0, 0] = -1
    assert x[0, 0] == 0  # copies, not views


def test_split_with_labels_shuffled_and_reproducible():
    x = np.arange(100).reshape(50, 2)
    y = np.arange(50) * 10
    parts = split(x, y, rng=np.random.default_rng(3))
    again = split(x, y, rng=np.random.default_rng(3))
    other = split(x, y, rng=np.random.default_rng(4))
    sizes = [parts[k][0].shape[0] for k in ("train", "val", "test")]
    assert sizes == [40, 5, 5]
    for name in ("train", "val", "test"):
        x_part, y_part = parts[name]
        assert np.array_equal(x_part, again[name][0]) and np.array_equal(y_part, again[name][1])
        assert np.array_equal(y_part, x_part[:, 0] * 5)  # rows and labels stay paired
    assert not np.array_equal(parts["train"][0], other["train"][0])
    assert not np.array_equal(parts["train"][0], x[:40])  # actually shuffled
    everything = np.concatenate([parts[k][0] for k in ("train", "val", "test")])
    assert np.array_equal(np.sort(everything[:, 0]), x[:, 0])  # a permutation, nothing lost


def test_split_errors():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="val_fraction"):
        split(x, val_fraction=1.0)
    with pytest.raises(ValueError, match="test_fraction"):
        split(x, test_fraction=-0.1)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        split(x, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="y"):
        split(x, np.zeros(9))
    with pytest.raises(TypeError, match="rng"):
        split(x, rng=42)
    with pytest.raises(ValueError, match="training rows"):
        split(np.zeros((2, 2)), val_fraction=0.4, test_fraction=0.4)


# --------------------------------------------------------------------------------------------
# Files as people have them
# --------------------------------------------------------------------------------------------

from minivae.datasets import as_labels, check_values, load_labels, split_label_column  # noqa: E402


def test_utf8_byte_order_mark_keeps_the_first_row(tmp_path, table):
    text = _as_lines(table, ",")
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (tmp_path / "excel_header.csv").write_bytes(b"\xef\xbb\xbf" + ("a,b,c,d\n" + text).encode("utf-8"))
    assert np.array_equal(load_array(tmp_path / "excel.csv"), table)
    assert np.array_equal(load_array(tmp_path / "excel_header.csv"), table)


def test_utf16_with_a_mark_and_semicolons_and_tabs(tmp_path, table):
    (tmp_path / "unicode.txt").write_bytes(_as_lines(table, "\t").encode("utf-16"))  # Excel's "Unicode text"
    assert np.array_equal(load_array(tmp_path / "unicode.txt"), table)
    _write_text(tmp_path / "semicolons.csv", "a;b;c;d\n" + _as_lines(table, ";"))
    assert np.array_equal(load_array(tmp_path / "semicolons.csv"), table)


def test_another_encoding_is_named(tmp_path, table):
    (tmp_path / "latin.csv").write_bytes(("poids,hauteur,âge,x\n" + _as_lines(table, ",")).encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.csv' is not UTF-8 text: byte 0xe2 on line 1"):
        load_array(tmp_path / "latin.csv")


def test_empty_and_non_numeric_cells_are_named_by_row_and_column(tmp_path):
    _write_text(tmp_path / "gap.csv", "a,b,c\n1,2,3\n4,,6\n")
    with pytest.raises(ValueError, match=r"data row 2 \(line 3\), column 2 is empty"):
        load_array(tmp_path / "gap.csv")
    _write_text(tmp_path / "word.csv", "1,2,3\n4,five,6\n")
    with pytest.raises(ValueError, match=r"data row 2 \(line 2\), column 2 holds 'five'"):
        load_array(tmp_path / "word.csv")
    _write_text(tmp_path / "ragged.csv", "1,2,3\n4,5\n")
    with pytest.raises(ValueError, match=r"data row 2 \(line 2\) has 2 fields; the rows before it have 3"):
        load_array(tmp_path / "ragged.csv")


def test_damaged_archives_and_compressed_files_say_so(tmp_path, table):
    np.savez(tmp_path / "x.npz", x=table)
    data = (tmp_path / "x.npz").read_bytes()
    (tmp_path / "x.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="x.npz' is not a readable .npz archive"):
        load_array(tmp_path / "x.npz")
    np.save(tmp_path / "x.npy", table)
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[:len(data) - 8])
    with pytest.raises(ValueError, match="x.npy' is a damaged .npy file"):
        load_array(tmp_path / "x.npy")
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(_as_lines(table, ",").encode())[:-10])
    with pytest.raises(ValueError, match="x.csv.gz' is a truncated gzip file"):
        load_array(tmp_path / "x.csv.gz")
    (tmp_path / "y.csv.gz").write_bytes(_as_lines(table, ",").encode())
    with pytest.raises(ValueError, match="y.csv.gz' is not a valid gzip file"):
        load_array(tmp_path / "y.csv.gz")


@pytest.mark.parametrize("position", [(0, 0), (2, 1), (4, 3)])
def test_check_values_names_the_first_nan_infinity_or_float32_overflow(position):
    row, column = position
    where = f"row {row + 1}, column {column + 1}"
    for value, message in ((np.nan, "is NaN"), (np.inf, "is inf"), (-1e39, r"is -1e\+39, beyond the range of float32")):
        x = np.zeros((5, 4))
        x[row, column] = value
        with pytest.raises(ValueError, match=f"data.csv: {where} {message}"):
            check_values(x, "data.csv", np.float32)
    x = np.zeros((5, 4))
    x[row, column] = 1e39
    assert check_values(x, "data.csv", np.float64) is x  # float64 holds it
    with pytest.raises(ValueError, match="float32"):
        check_values(x, "data.csv", np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(x.astype(np.float32)).any()  # why the check runs before the cast


def test_labels_from_a_file_or_a_column(tmp_path, table):
    np.savetxt(tmp_path / "labels.csv", np.array([3, 1, 4, 1, 5]), fmt="%d")
    assert load_labels(tmp_path / "labels.csv", n=5).tolist() == [3, 1, 4, 1, 5]
    with pytest.raises(ValueError, match="holds 5 labels; the data has 6 rows"):
        load_labels(tmp_path / "labels.csv", n=6)
    with pytest.raises(ValueError, match="integer class labels"):
        as_labels(np.array([0.5, 1.0]), "labels")
    data = np.column_stack([table, np.arange(5)])
    rest, labels = split_label_column(data, -1, "data.csv")
    assert np.array_equal(rest, table) and labels.tolist() == [0, 1, 2, 3, 4]
    rest, labels = split_label_column(data[:, ::-1], 0, "data.csv")
    assert np.array_equal(rest, table[:, ::-1]) and labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="label column 9 does not exist in data.csv, which has 4 columns"):
        split_label_column(data, 9, "data.csv")
