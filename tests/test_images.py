"""Image files (the folder source, predict) decoded with Pillow in any mode; the folder's classes
checked; the decoded-image cache written without leaving a partial file behind."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.errors import DataError
from cifar_cnn.training import data
from cifar_cnn.training.data import CACHE_NAME, CIFAR10DataModule, load_arrays
from cifar_cnn.training.images import read_rgb
from helpers import REPO, make_folder

RGB = np.arange(32 * 32 * 3, dtype=np.int64).reshape(32, 32, 3).astype(np.uint8)


def write_modes(folder):
    """The same 32x32 picture in the modes and formats a user's files come in."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(RGB)
    image.save(folder / "rgb.png")
    image.convert("L").save(folder / "grey.png")
    image.convert("P").save(folder / "palette.gif")
    image.convert("RGBA").save(folder / "alpha.png")
    image.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    image.save(folder / "lossless.webp", lossless=True)
    grey16 = (RGB[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    return folder


def test_every_mode_becomes_rgb_uint8_with_the_same_pixels(tmp_path):
    folder = write_modes(tmp_path)
    grey = np.asarray(Image.fromarray(RGB).convert("L"))
    for name, expected in [
        ("rgb.png", RGB),
        ("lossless.webp", RGB),
        ("alpha.png", RGB),  # alpha is dropped
        ("grey.png", np.repeat(grey[..., None], 3, axis=2)),
        ("grey16.png", np.repeat(RGB[..., :1], 3, axis=2)),  # 16 bits scaled, not clipped
    ]:
        image, converted = read_rgb(folder / name, 32)
        assert image.dtype == torch.uint8 and image.shape == (32, 32, 3), name
        assert torch.equal(image, torch.from_numpy(expected)), name
        assert converted == (name not in ("rgb.png", "lossless.webp")), name
    for name in ("palette.gif", "cmyk.jpg"):  # lossy conversions: close, not equal
        image, converted = read_rgb(folder / name, 32)
        error = (image.float() - torch.from_numpy(RGB).float()).abs().mean()
        assert converted and error < 40, name


def test_large_images_are_resized_with_antialiasing_and_exif_orientation_applied(tmp_path):
    stripes = np.zeros((64, 128, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: a point sample would be all black or white
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    image, converted = read_rgb(tmp_path / "stripes.png", 32)
    assert converted and image.shape == (32, 32, 3)
    assert 100 < image.float().mean() < 155  # averaged to grey

    tall = np.zeros((32, 16, 3), dtype=np.uint8)
    tall[:, :8] = 255  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(tall).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image, converted = read_rgb(tmp_path / "rotated.jpg", 32)
    assert converted
    assert image[:8].float().mean() > 200 and image[-8:].float().mean() < 55  # white on top


def test_a_file_that_is_not_an_image_is_a_data_error(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(DataError, match=r"not a readable image .*PNG, JPEG, WebP"):
        read_rgb(tmp_path / "notes.png", 32)
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "cut.png")  # ~3 KB: noise does not compress
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:1000])
    with pytest.raises(DataError, match=r"not a readable image"):
        read_rgb(tmp_path / "cut.png", 32)


# --- the folder source --------------------------------------------------------------------
def test_the_folder_source_reads_any_mode_as_rgb(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    write_modes(root / "train" / "cat")
    arrays = load_arrays("folder", root)
    assert arrays["train_x"].shape == (17, 32, 32, 3) and arrays["train_x"].dtype == torch.uint8
    assert (arrays["train_y"] == CLASSES.index("cat")).sum() == 8


def test_an_empty_class_folder_is_refused_by_name(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    for path in (root / "test" / "truck").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"imgs/test: the class folders truck hold no images"):
        load_arrays("folder", root)


def test_extra_folders_and_non_images_are_named_and_left_out(tmp_path, caplog):
    root = make_folder(tmp_path / "imgs", per_class=2)
    (root / "test" / "horses").mkdir()
    Image.fromarray(RGB).save(root / "test" / "horses" / "h.png")
    (root / "test" / "cat" / "README.txt").write_text("notes")
    (root / "test" / "cat" / ".DS_Store").write_text("hidden")
    with caplog.at_level("INFO"):
        arrays = load_arrays("folder", root)
    assert len(arrays["test_y"]) == 20  # ten classes of two: exactly what is evaluated
    assert "left out the folders horses: they are not CIFAR-10 classes" in caplog.text
    assert "left out 1 entries that are not image files (cat/README.txt)" in caplog.text
    assert "imgs/test: 20 images (airplane 2, automobile 2" in caplog.text


def test_a_folder_of_31x31_images_is_refused_naming_a_file(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    Image.fromarray(RGB[:31, :31]).save(root / "train" / "dog" / "0000.png")
    with pytest.raises(DataError, match=r"dog/0000.png is \(3, 31, 31\).*must be 32x32 RGB"):
        load_arrays("folder", root)


# --- the decoded-image cache --------------------------------------------------------------
def test_a_failed_cache_write_leaves_no_partial_file_and_names_the_folder(
    tmp_path, monkeypatch, caplog
):
    root = make_folder(tmp_path / "imgs", per_class=1)
    real_save = torch.save

    def failing_save(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"x" * 4096)  # part of the file, then the disk is full
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(data.torch, "save", failing_save)
    with caplog.at_level("WARNING"):
        arrays = load_arrays("folder", root)
    assert len(arrays["train_y"]) == 10  # the run goes on with the decoded images
    assert f"in the folder {root}" in caplog.text and "file write failed" in caplog.text
    assert sorted(p.name for p in root.iterdir()) == [".cifar_cnn_uint8.pt.lock", "test", "train"]
    monkeypatch.setattr(data.torch, "save", real_save)
    load_arrays("folder", root)
    assert (root / CACHE_NAME).is_file()  # written once the disk has room


@pytest.mark.slow
def test_a_file_size_limit_while_caching_leaves_no_partial_file(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=10)  # a cache of ~630 KB
    script = textwrap.dedent(
        f"""
        import logging, resource, signal, sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        logging.basicConfig(level=logging.WARNING)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        from cifar_cnn.training.data import load_arrays
        arrays = load_arrays("folder", {str(root)!r})
        print("images", len(arrays["train_y"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert "images 100" in result.stdout
    assert f"in the folder {root}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(root.glob("*.tmp")) and not (root / CACHE_NAME).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_data_folder_is_decoded_without_a_cache(tmp_path, caplog):
    root = make_folder(tmp_path / "imgs", per_class=1)
    root.chmod(0o555)
    try:
        with caplog.at_level("WARNING"):
            arrays = load_arrays("folder", root)
    finally:
        root.chmod(0o755)
    assert len(arrays["test_y"]) == 10
    assert f"in the folder {root}" in caplog.text
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]


def test_a_folder_of_test_images_alone_evaluates_but_does_not_train(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    shutil.rmtree(root / "train")
    module = CIFAR10DataModule("folder", str(root), batch_size=4)
    module.setup("test")
    assert sum(len(y) for _, y in module.test_dataloader()) == 10
    with pytest.raises(DataError, match=r"has no training images; the folder source trains on"):
        CIFAR10DataModule("folder", str(root), batch_size=4).setup("fit")
