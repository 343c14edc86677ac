"""Image files to uint8 RGB tensors with Pillow, and the folder data source's listing: the
folder source and `predict` read images here, so both see the same pixels for the same file."""

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from cifar_cnn.core.cifar10 import CLASSES, IMAGE_SIZE
from cifar_cnn.core.errors import DataError

log = logging.getLogger(__name__)

# Files with these suffixes are images to the folder source; `predict` tries every file.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
IMAGE_FORMATS = "PNG, JPEG, WebP, GIF, BMP, TIFF"
ORIENTATION = 0x0112  # the EXIF tag
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # more than 8 bits per value


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit or float grey image as 8-bit grey: 16-bit values scaled by 255/65535, floats
    taken as 0-255 (Pillow's own conversion would clip every value above 255 to white)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode != "F":
        values = values / 257
    return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8), "L")


def _reason(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def open_rgb(path: Path) -> tuple[Image.Image, bool]:
    """The image in `path` as an 8-bit RGB Pillow image, EXIF orientation applied, and whether
    it had to be converted: any mode (grey, palette, alpha, CMYK, 16-bit) is (alpha is dropped,
    a GIF's first frame is read). DataError if it is not an image Pillow reads (or one so large
    that Pillow refuses it as a decompression bomb)."""
    try:
        with Image.open(path) as original:
            rotated = original.getexif().get(ORIENTATION, 1) != 1
            image = ImageOps.exif_transpose(original)
            converted = image.mode != "RGB" or rotated
            if image.mode in _WIDE_MODES:
                image = _eight_bit(image)
            return image.convert("RGB"), converted
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise DataError(
            f"not a readable image ({_reason(e)}; {IMAGE_FORMATS} files are read)"
        ) from e


def to_tensor(image: Image.Image) -> Tensor:
    """An RGB Pillow image as a uint8 (height, width, 3) tensor."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))


def read_rgb(path: Path, size: int) -> tuple[Tensor, bool]:
    """The image in `path` as uint8 (size, size, 3) RGB, and whether it had to be converted
    or resized. Resizing is antialiased: Pillow's bilinear filter widens with the reduction,
    so every source pixel counts (non-square images are stretched)."""
    image, converted = open_rgb(path)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
        converted = True
    return to_tensor(image), converted


def folder_files(root: Path, split: str, required: bool = True) -> list[tuple[Path, int]]:
    """(file, label) of the images in root/split/<class>/, in class order. A class folder
    without images is refused, unless the split is not `required` (evaluating reads no
    training images, so empty train/<class>/ folders are fine then); folders that are not
    CIFAR-10 classes and files that are not images are left out with a warning naming them;
    hidden files are ignored."""
    split_dir = root / split
    missing = [c for c in CLASSES if not (split_dir / c).is_dir()]
    if missing:
        raise DataError(
            f"image folder {split_dir} lacks the class folders {', '.join(missing)}; the folder "
            f"source expects DATA_ROOT/{{train,test}}/<class>/*.png|jpg with the classes "
            f"{', '.join(CLASSES)}"
        )
    files, skipped, counts = [], [], []
    for label, name in enumerate(CLASSES):
        visible = sorted(p for p in (split_dir / name).iterdir() if not p.name.startswith("."))
        images = [p for p in visible if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        files += [(path, label) for path in images]
        skipped += [p for p in visible if p not in images]
        counts.append(f"{name} {len(images)}")
    empty = [c.split()[0] for c in counts if c.endswith(" 0")]
    if empty and required:
        raise DataError(
            f"image folder {split_dir}: the class folders {', '.join(empty)} hold no images "
            f"(suffixes {', '.join(IMAGE_SUFFIXES)}); every CIFAR-10 class needs {split} images "
            "(a class without test images has no recall, and the mean over classes would "
            "silently change its meaning)"
        )
    extra = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and p.name not in CLASSES)
    if extra:
        log.warning(
            "%s: left out the folders %s: they are not CIFAR-10 classes (%s)",
            *(split_dir, ", ".join(extra), ", ".join(CLASSES)),
        )
    folders = [p for p in skipped if p.is_dir()]
    if folders:
        shown = ", ".join(str(p.relative_to(split_dir)) for p in folders[:5])
        log.warning(
            "%s: left out %d folders inside class folders (%s%s): images are read from "
            "<class>/ itself, not from folders below it; move them up to use them",
            *(split_dir, len(folders), shown, ", ..." if len(folders) > 5 else ""),
        )
    skipped = [p for p in skipped if not p.is_dir()]
    if skipped:
        shown = ", ".join(str(p.relative_to(split_dir)) for p in skipped[:5])
        log.warning(
            "%s: left out %d entries that are not image files (%s%s); images end in %s",
            *(split_dir, len(skipped), shown, ", ..." if len(skipped) > 5 else ""),
            ", ".join(IMAGE_SUFFIXES),
        )
    log.info("%s: %d images (%s)", split_dir, len(files), ", ".join(counts))
    return files


def decode_folder(files: list[tuple[Path, int]]) -> tuple[Tensor, Tensor]:
    """The 32x32 images of `files` as uint8 (N, 32, 32, 3) RGB and their labels; DataError
    naming the first file that is not a readable image or not 32x32."""
    images = torch.empty(len(files), IMAGE_SIZE, IMAGE_SIZE, 3, dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        try:
            image, _ = open_rgb(path)
        except DataError as e:
            raise DataError(
                f"{path} is not a readable PNG or JPEG image, nor {IMAGE_FORMATS} "
                f"({_reason(e.__cause__)})"
            ) from e
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            width, height = image.size
            raise DataError(
                f"{path} is (3, {height}, {width}) (channels, height, width); every image must "
                f"be 32x32 RGB (3, 32, 32), as CIFAR-10's (other modes are converted to RGB)"
            )
        images[i] = to_tensor(image)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return images, labels
