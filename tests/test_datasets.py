"""Tests for deepnet.datasets: the IDX parser, the data search, the cache and the real MNIST."""

import gzip
import hashlib
import io
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from deepnet import _mnist_cache, _mnist_files, datasets
from deepnet.datasets import (
    MNISTFormatError,
    MNISTNotFoundError,
    find_mnist_dir,
    load_mnist,
    read_idx,
)

REPO_MNIST = Path(__file__).resolve().parent.parent / "data" / "mnist"
STEMS = list(datasets.MNIST_FILES.values())


def idx_bytes(array, dtype_byte=0x08, ndim=None):
    """Encode ``array`` as IDX: two zero bytes, the type byte, ndim, big-endian dims, data."""
    ndim = array.ndim if ndim is None else ndim
    header = bytes([0, 0, dtype_byte, ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path, content, compress):
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test may see the user's data, home cache or network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    monkeypatch.chdir(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("tests must not download")

    monkeypatch.setattr(_mnist_files, "_fetch", no_network)
    # Nor the copy installed with deepnet: each test lays out the places it searches.
    monkeypatch.setattr(_mnist_files, "shipped_data_dir", lambda: tmp_path / "installed")


def make_fake_mnist(directory, seed=0, n_train=6, n_test=4, compress=True):
    """Write four small MNIST-named files; return their arrays and decompressed digests."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_img": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_label": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_img": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_label": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    digests = {}
    for key, stem in datasets.MNIST_FILES.items():
        content = idx_bytes(arrays[key])
        write(directory / (stem + ".gz" if compress else stem), content, compress)
        digests[stem] = hashlib.sha256(content).hexdigest()
    return arrays, digests


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """Small MNIST-named files whose digests the loader is told to accept."""
    directory = tmp_path / "fake"
    arrays, digests = make_fake_mnist(directory)
    for stem, digest in digests.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, stem, digest)
    return directory, arrays


# --- read_idx ------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_reads_images_and_labels(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    images_path = write(tmp_path / "images.idx", idx_bytes(images), compress)
    labels_path = write(tmp_path / "labels.idx", idx_bytes(labels), compress)

    read_images, read_labels = read_idx(images_path), read_idx(str(labels_path))

    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    assert read_images.dtype == np.uint8 and read_images.flags.writeable


def test_read_idx_accepts_file_objects():
    labels = np.array([9, 8, 7], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(io.BytesIO(gzip.compress(idx_bytes(labels)))), labels)


def test_format_error_is_a_value_error():
    assert issubclass(MNISTFormatError, ValueError)


@pytest.mark.parametrize(
    "header, expected_in_message",
    [
        (b"\x1f\x00\x08\x01", "not an IDX file"),  # wrong leading bytes
        (b"\x00\x00\x08\x02", "0x00000802"),  # valid type, but 2 dimensions
        (b"\x00\x00\x0d\x01", "data type byte 0x0d, expected 0x08"),  # float32 IDX
    ],
)
def test_read_idx_rejects_wrong_magic(tmp_path, header, expected_in_message):
    path = write(tmp_path / "bad.idx", header + struct.pack(">I", 1) + b"\x00", compress=False)
    with pytest.raises(MNISTFormatError, match=expected_in_message) as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_read_idx_rejects_truncated_header(tmp_path):
    path = write(tmp_path / "short.idx", b"\x00\x00\x08\x03\x00\x00\x00\x02", compress=True)
    with pytest.raises(MNISTFormatError, match="too short for an IDX header"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_rejects_truncated_payload(tmp_path, compress):
    content = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))
    path = write(tmp_path / "images.idx", content[:-1], compress)
    with pytest.raises(MNISTFormatError, match=r"payload is 2351 bytes, expected 2352 .*truncated"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_rejects_trailing_bytes(tmp_path, compress):
    content = idx_bytes(np.zeros(5, dtype=np.uint8))
    path = write(tmp_path / "labels.idx", content + b"\x00\x00", compress)
    with pytest.raises(MNISTFormatError, match=r"payload is 7 bytes, expected 5 .*trailing"):
        read_idx(path)


def test_read_idx_rejects_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8) % 10))
    path = tmp_path / "labels.idx.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(MNISTFormatError, match="gzip"):
        read_idx(path)


@pytest.mark.parametrize("filename", ["train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"])
def test_read_idx_verifies_digest_of_known_mnist_files(tmp_path, filename):
    # Well-formed, but not the real MNIST training labels.
    path = write(tmp_path / filename, idx_bytes(np.zeros(10, dtype=np.uint8)), filename.endswith(".gz"))
    real_digest = "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    with pytest.raises(MNISTFormatError, match=f"SHA-256 .*expected {real_digest}"):
        read_idx(path)


def test_read_idx_checks_digest_by_given_name():
    content = io.BytesIO(idx_bytes(np.zeros(10, dtype=np.uint8)))
    with pytest.raises(MNISTFormatError, match="t10k-labels-idx1-ubyte"):
        read_idx(content, name="t10k-labels-idx1-ubyte.gz")


def test_embedded_digests_match_the_shipped_sums_file():
    lines = (REPO_MNIST / "SHA256SUMS.idx").read_text().splitlines()
    shipped = {name: digest for digest, name in (line.split() for line in lines if line.strip())}
    assert datasets.MNIST_SHA256 == shipped


# --- load_mnist on small fake data -------------------------------------------------------


def test_load_mnist_options_on_fake_data(fake_mnist):
    directory, arrays = fake_mnist

    (x, t), (x_test, t_test) = load_mnist(root=directory)
    assert x.shape == (6, 784) and x.dtype == np.float32
    np.testing.assert_array_equal(x, arrays["train_img"].reshape(6, 784).astype(np.float32) / 255)
    assert t.dtype == np.int64
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert x_test.shape == (4, 784)
    np.testing.assert_array_equal(t_test, arrays["test_label"])

    (x, _), _ = load_mnist(normalize=False, flatten=False, root=directory)
    assert x.dtype == np.uint8 and x.shape == (6, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0], arrays["train_img"])

    (x, t), _ = load_mnist(one_hot_label=True, dtype=np.float64, root=directory)
    assert x.dtype == np.float64 and t.dtype == np.float64 and t.shape == (6, 10)
    np.testing.assert_array_equal(t, np.eye(10)[arrays["train_label"]])


def test_load_mnist_rejects_integer_dtype(fake_mnist):
    with pytest.raises(ValueError, match="floating"):
        load_mnist(dtype=np.uint8, root=fake_mnist[0])


def test_load_mnist_reads_uncompressed_files(tmp_path, monkeypatch):
    arrays, digests = make_fake_mnist(tmp_path / "raw", compress=False)
    for stem, digest in digests.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, stem, digest)
    (_, t), _ = load_mnist(root=tmp_path / "raw")
    np.testing.assert_array_equal(t, arrays["train_label"])


def test_load_mnist_rejects_image_and_label_count_mismatch(fake_mnist, monkeypatch):
    directory, _ = fake_mnist
    content = idx_bytes(np.zeros(5, dtype=np.uint8))  # 5 labels for 6 training images
    write(directory / "train-labels-idx1-ubyte.gz", content, compress=True)
    monkeypatch.setitem(datasets.MNIST_SHA256, "train-labels-idx1-ubyte", hashlib.sha256(content).hexdigest())
    with pytest.raises(MNISTFormatError, match="6 images but .*train-labels-idx1-ubyte.gz holds 5 labels"):
        load_mnist(root=directory)


def test_load_mnist_rejects_a_wrong_file_among_the_four(fake_mnist):
    directory, _ = fake_mnist
    write(directory / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.ones(4, dtype=np.uint8)), compress=True)
    with pytest.raises(MNISTFormatError, match="t10k-labels-idx1-ubyte.gz: SHA-256"):
        load_mnist(root=directory)


# --- the .npz cache ----------------------------------------------------------------------


def home_cache():
    return Path.home() / ".cache" / "deepnet"


def cache_files():
    return sorted(home_cache().glob("mnist-arrays-*.npz"))


def test_second_load_comes_from_the_cache(fake_mnist, monkeypatch):
    directory, arrays = fake_mnist
    first = load_mnist(root=directory)
    assert len(cache_files()) == 1

    def parser_must_not_run(*args, **kwargs):
        raise AssertionError("cache was not used")

    monkeypatch.setattr(_mnist_cache, "read_idx", parser_must_not_run)
    second = load_mnist(root=directory)
    np.testing.assert_array_equal(second[0][0], first[0][0])
    np.testing.assert_array_equal(second[1][1], arrays["test_label"])


def test_cache_is_written_in_the_user_cache_dir_never_beside_the_data(fake_mnist):
    # Issue 9, item 14: the 53 MB cache landed in the repository's data/mnist/.
    directory, _ = fake_mnist
    before = sorted(os.listdir(directory))
    load_mnist(root=directory)
    assert sorted(os.listdir(directory)) == before
    assert len(cache_files()) == 1


def test_cache_follows_xdg_cache_home(fake_mnist, tmp_path, monkeypatch):
    directory, arrays = fake_mnist
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_mnist(root=directory)
    assert len(list((tmp_path / "xdg" / "deepnet").glob("mnist-arrays-*.npz"))) == 1
    assert not home_cache().exists()
    monkeypatch.setattr(_mnist_cache, "read_idx", lambda *a, **k: pytest.fail("cache was not used"))
    (_, t), _ = load_mnist(root=directory)
    np.testing.assert_array_equal(t, arrays["train_label"])


@pytest.mark.parametrize("garbage", [b"", b"not a zip file", b"PK\x03\x04 truncated"])
def test_corrupt_cache_is_ignored_and_rebuilt(fake_mnist, garbage):
    directory, arrays = fake_mnist
    load_mnist(root=directory)
    [cache] = cache_files()
    cache.write_bytes(garbage)

    (_, t), _ = load_mnist(root=directory)

    np.testing.assert_array_equal(t, arrays["train_label"])
    assert cache.stat().st_size > len(garbage)


def test_cache_holding_anything_else_is_ignored(fake_mnist):
    directory, arrays = fake_mnist
    load_mnist(root=directory)
    [cache] = cache_files()
    with np.load(cache) as npz:
        entries = dict(npz)
    entries["train_label"] = entries["train_label"].astype(np.float64)  # not uint8 labels
    np.savez(cache, **entries)
    (_, t), _ = load_mnist(root=directory)
    assert t.dtype == np.int64
    np.testing.assert_array_equal(t, arrays["train_label"])
    with np.load(cache) as npz:
        assert npz["train_label"].dtype == np.uint8  # rebuilt


def test_changed_source_file_invalidates_the_cache(tmp_path, monkeypatch):
    # Uncompressed files, so the edited file keeps its size and only its mtime changes.
    directory = tmp_path / "raw"
    _, digests = make_fake_mnist(directory, compress=False)
    for stem, digest in digests.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, stem, digest)
    load_mnist(root=directory)

    path = directory / "train-labels-idx1-ubyte"
    new_content = idx_bytes(np.full(6, 9, dtype=np.uint8))
    assert len(new_content) == path.stat().st_size
    old_mtime = path.stat().st_mtime_ns
    path.write_bytes(new_content)
    # Rewrites within one clock tick can keep the same mtime; make the change explicit.
    os.utime(path, ns=(old_mtime + 10**9, old_mtime + 10**9))

    # The edited file is re-read (not served from the stale cache) and fails verification...
    with pytest.raises(MNISTFormatError, match="train-labels-idx1-ubyte: SHA-256"):
        load_mnist(root=directory)
    # ...and once it is the expected content, its labels are returned.
    monkeypatch.setitem(datasets.MNIST_SHA256, "train-labels-idx1-ubyte", hashlib.sha256(new_content).hexdigest())
    (_, t), _ = load_mnist(root=directory)
    np.testing.assert_array_equal(t, [9] * 6)


def test_replacement_with_the_same_size_and_mtime_invalidates_the_cache(tmp_path, monkeypatch):
    # What `cp -p` of another copy does: same size, same modification time, new content.
    directory = tmp_path / "raw"
    _, digests = make_fake_mnist(directory, compress=False)
    for stem, digest in digests.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, stem, digest)
    load_mnist(root=directory)

    path = directory / "train-labels-idx1-ubyte"
    new_content = idx_bytes(np.full(6, 9, dtype=np.uint8))
    old = path.stat()
    replacement = directory / "replacement"
    replacement.write_bytes(new_content)
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(replacement, path)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)

    # The new file is read (not the stale cache served) and fails verification.
    with pytest.raises(MNISTFormatError, match="train-labels-idx1-ubyte: SHA-256"):
        load_mnist(root=directory)


def test_unwritable_cache_dir_still_loads(fake_mnist, monkeypatch):
    directory, arrays = fake_mnist
    home_cache().parent.mkdir(parents=True)
    home_cache().write_bytes(b"a file where the cache directory would be")
    (_, t), _ = load_mnist(root=directory)
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert sorted(os.listdir(directory)) == sorted(stem + ".gz" for stem in STEMS)


# --- where the data is looked for ----------------------------------------------------------


def placeholder_mnist(directory, suffix=".gz"):
    """Empty files with the four names: enough for the search, which only looks at names."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        (directory / (stem + suffix)).touch()
    return directory


def test_search_order_root_env_cwd_installed_home(tmp_path, monkeypatch):
    home_dir = placeholder_mnist(Path.home() / ".cache" / "deepnet" / "mnist")
    assert find_mnist_dir() == home_dir

    installed_dir = placeholder_mnist(tmp_path / "installed" / "mnist")
    assert find_mnist_dir() == installed_dir

    cwd_dir = placeholder_mnist(tmp_path / "data" / "mnist")
    assert find_mnist_dir() == cwd_dir

    env_dir = placeholder_mnist(tmp_path / "env")
    monkeypatch.setenv("DEEPNET_DATA", str(env_dir))
    assert find_mnist_dir() == env_dir

    root_dir = placeholder_mnist(tmp_path / "root", suffix="")
    assert find_mnist_dir(root=root_dir) == root_dir


def test_search_accepts_a_parent_with_an_mnist_subdirectory(tmp_path, monkeypatch):
    placeholder_mnist(tmp_path / "shared" / "mnist")
    monkeypatch.setenv("DEEPNET_DATA", str(tmp_path / "shared"))
    assert find_mnist_dir() == tmp_path / "shared" / "mnist"


def test_directory_missing_one_file_is_skipped(tmp_path):
    incomplete = placeholder_mnist(tmp_path / "incomplete")
    (incomplete / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_mnist_dir(root=incomplete) is None


def test_load_mnist_uses_root_before_env(fake_mnist, tmp_path, monkeypatch):
    directory, arrays = fake_mnist
    # The env directory has the right names but unreadable content: using it would raise.
    monkeypatch.setenv("DEEPNET_DATA", str(placeholder_mnist(tmp_path / "env")))
    (_, t), _ = load_mnist(root=directory)
    np.testing.assert_array_equal(t, arrays["train_label"])


# --- nothing found: download, or explain ----------------------------------------------------


def test_not_found_error_explains_what_to_do(tmp_path, monkeypatch):
    attempts = []

    def failing_download(directory):
        attempts.append(Path(directory))
        raise OSError("network is unreachable")

    monkeypatch.setattr(_mnist_files, "download_mnist", failing_download)
    with pytest.raises(MNISTNotFoundError) as excinfo:
        load_mnist(root=tmp_path / "nowhere")

    download_dir = Path.home() / ".cache" / "deepnet" / "mnist"
    assert attempts == [download_dir]
    assert isinstance(excinfo.value, FileNotFoundError)
    message = str(excinfo.value)
    for stem in STEMS:
        assert f"{stem}.gz" in message
    for searched in [tmp_path / "nowhere", tmp_path / "data" / "mnist", download_dir]:
        assert str(searched) in message
    assert "network is unreachable" in message


def test_downloaded_files_are_loaded(tmp_path, monkeypatch):
    arrays, digests = make_fake_mnist(tmp_path / "mirror")
    for stem, digest in digests.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, stem, digest)

    def fake_download(directory):
        shutil.copytree(tmp_path / "mirror", directory)
        return directory

    monkeypatch.setattr(_mnist_files, "download_mnist", fake_download)
    (_, t), _ = load_mnist()
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert (Path.home() / ".cache" / "deepnet" / "mnist" / "train-labels-idx1-ubyte.gz").is_file()


def test_download_tries_mirrors_in_order_and_verifies(tmp_path, monkeypatch):
    _, digests = make_fake_mnist(tmp_path / "good")
    for stem, digest in digests.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, stem, digest)
    wrong = gzip.compress(idx_bytes(np.zeros(6, dtype=np.uint8)))
    requested = []

    def fetch(url):
        requested.append(url)
        mirror, filename = url.rsplit("/", 1)
        if mirror == "https://down.example":
            raise OSError("connection refused")
        if mirror == "https://bad.example":
            return wrong  # a well-formed IDX file with the wrong content
        return (tmp_path / "good" / filename).read_bytes()

    monkeypatch.setattr(_mnist_files, "_fetch", fetch)
    target = tmp_path / "downloads"
    mirrors = ("https://down.example/", "https://bad.example/", "https://good.example/")
    datasets.download_mnist(target, mirrors=mirrors)

    assert requested[:3] == [m + "train-images-idx3-ubyte.gz" for m in mirrors]
    for stem in STEMS:
        assert (target / (stem + ".gz")).read_bytes() == (tmp_path / "good" / (stem + ".gz")).read_bytes()


def test_failed_download_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_mnist_files, "_fetch", lambda url: b"\x00\x00\x08\x01 garbage")
    target = tmp_path / "downloads"
    with pytest.raises(OSError, match="could not download train-images-idx3-ubyte.gz"):
        datasets.download_mnist(target, mirrors=("https://a.example/", "https://b.example/"))
    assert not any(target.glob("*"))


# --- the real MNIST shipped in data/mnist ---------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist_dir(tmp_path_factory):
    """A copy of the repo's MNIST files, so the cache the loader writes stays out of the repo."""
    directory = tmp_path_factory.mktemp("mnist")
    for stem in STEMS:
        shutil.copy(REPO_MNIST / (stem + ".gz"), directory)
    return directory


@pytest.fixture(scope="module")
def real_mnist(real_mnist_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # module scope: isolated_env is not active yet
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        patch.delenv("DEEPNET_DATA", raising=False)
        return load_mnist(root=real_mnist_dir)


def test_real_mnist_shapes_and_dtypes(real_mnist):
    (x, t), (x_test, t_test) = real_mnist
    assert x.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x.dtype == x_test.dtype == np.float32
    assert t.shape == (60000,) and t_test.shape == (10000,)
    assert t.dtype == t_test.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0


def test_real_mnist_known_facts(real_mnist):
    (x, t), (_, t_test) = real_mnist
    expected_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(t, minlength=10).tolist() == expected_counts
    assert t_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert round(float(x.mean(dtype=np.float64)), 4) == 0.1307


def test_real_mnist_unflattened_and_unnormalized(real_mnist, real_mnist_dir):
    (x, _), (x_test, _) = load_mnist(normalize=False, flatten=False, root=real_mnist_dir)
    assert x.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x.dtype == np.uint8 and x.max() == 255
    # Same pixels as the flattened, normalized arrays.
    np.testing.assert_array_equal(x_test.reshape(10000, 784) / np.float32(255), real_mnist[1][0])


def test_real_mnist_one_hot(real_mnist, real_mnist_dir):
    (_, t), (_, t_test) = load_mnist(one_hot_label=True, root=real_mnist_dir)
    assert t.shape == (60000, 10) and t_test.shape == (10000, 10)
    assert set(np.unique(t).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(t.sum(axis=1), 1)
    np.testing.assert_array_equal(t.argmax(axis=1), real_mnist[0][1])
    np.testing.assert_array_equal(t_test.argmax(axis=1), real_mnist[1][1])
