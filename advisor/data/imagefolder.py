"""Folders of images with one sub-folder per class (torchvision's ImageFolder layout).

`DIR/CLASS/*.png` gives one split; `DIR/train/CLASS/...` with an optional
`DIR/test/CLASS/...` gives the source's own train/test split. Class names are
the training sub-folder names in sorted order, as torchvision's
`find_classes` returns them.

Loading is lazy: only the image headers are read here, to check that every
image has the same size and to choose gray or RGB, and the pixels are decoded
per example when they are indexed (`advisor.data.lazy.ImageFiles`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advisor.data.bundle import RawDataset
from advisor.data.lazy import ImageFiles
from advisor.errors import DataError

# PIL modes read as one gray channel; every other mode is converted to RGB.
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _scan_split(folder: Path, class_to_index: dict[str, int]) -> tuple[list[Path], np.ndarray]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    samples = make_dataset(str(folder), class_to_index, extensions=IMG_EXTENSIONS, allow_empty=True)
    paths = [Path(path) for path, _ in samples]
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return paths, labels


def _read_headers(spec: str, paths: list[Path]) -> tuple[int, int, int]:
    """Check that all images share one size; return (channels, height, width)."""
    from PIL import Image, UnidentifiedImageError

    reference: tuple[Path, tuple[int, int]] | None = None
    all_gray = True
    for path in paths:
        try:
            with Image.open(path) as image:
                size, mode = image.size, image.mode
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(spec, f"cannot read image {path} ({error})", "Replace or delete the file.", path=str(path)) from error
        if reference is None:
            reference = (path, size)
        elif size != reference[1]:
            raise DataError(
                spec,
                f"image {path} is {size[0]}x{size[1]} pixels but {reference[0]} is {reference[1][0]}x{reference[1][1]}",
                "Resize all images to one size before running the advisor; it does not resize.",
                path=str(path),
            )
        all_gray = all_gray and mode in _GRAY_MODES
    if reference is None:
        raise DataError(spec, "the image folder contains no images", "Add images in one sub-folder per class.")
    width, height = reference[1]
    return (1 if all_gray else 3), height, width


def load_image_folder(spec: str, root: Path) -> RawDataset:
    """Index the images under `root` and return them as lazily read inputs."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

    if not root.is_dir():
        raise DataError(spec, f"{root} is not a directory", "Pass a folder with one sub-folder of images per class.", path=str(root))
    train_dir, test_dir = root, None
    if (root / "train").is_dir():
        train_dir = root / "train"
        test_dir = root / "test" if (root / "test").is_dir() else None

    try:
        class_names, class_to_index = find_classes(str(train_dir))
    except FileNotFoundError as error:
        raise DataError(spec, f"{train_dir} has no class sub-folders", "Put the images of each class in their own sub-folder.", path=str(train_dir)) from error

    train_paths, train_labels = _scan_split(train_dir, class_to_index)
    for index, name in enumerate(class_names):
        if not (train_labels == index).any():
            raise DataError(
                spec, f"class folder {train_dir / name} contains no images (extensions {', '.join(IMG_EXTENSIONS)})",
                "Add images to it or remove the folder.", path=str(train_dir / name),
            )

    test_paths: list[Path] = []
    test_labels = None
    if test_dir is not None:
        extra = sorted(entry.name for entry in test_dir.iterdir() if entry.is_dir() and entry.name not in class_to_index)
        if extra:
            raise DataError(
                spec, f"{test_dir} has class folder(s) {', '.join(extra)} that {train_dir} lacks",
                "Give the train and test splits the same class folders.", path=str(test_dir / extra[0]),
            )
        test_paths, test_labels = _scan_split(test_dir, class_to_index)
        if not test_paths:
            raise DataError(spec, f"{test_dir} contains no images", "Add test images or remove the test folder.", path=str(test_dir))

    channels, height, width = _read_headers(spec, train_paths + test_paths)
    x = ImageFiles(spec, train_paths, channels=channels, height=height, width=width)
    x_test = ImageFiles(spec, test_paths, channels=channels, height=height, width=width) if test_dir is not None else None

    def locate(split: str, index: int) -> str:
        paths = train_paths if split == "training" else test_paths
        return f"image {paths[index]}"

    return RawDataset(
        x=x, y=train_labels, task="classification", class_names=list(class_names),
        x_test=x_test, y_test=test_labels, origin=str(root), locate=locate,
    )
