"""Datasets as people hold them, turned once into the in-memory image sets the trainer reads.

A torch `Dataset` (anything with `__len__` and `__getitem__`) yields `(image, label)` or an image
alone; an image is a PIL image, a CHW tensor (uint8, or float in [0, 1] as `ToTensor` gives) or an
HWC array; a label is an int into `classes` (or a class name). A Hugging Face `datasets` image
dataset yields dicts: its image column and its label column (a `ClassLabel` is matched to
`classes` by name) are found from its features.

Every image is decoded once, at start, into one uint8 [N, C, H, W] tensor: N x C x H x W bytes
(50 000 RGB images of 32 px take 150 MiB; of 224 px, 7.5 GiB), the price of never decoding
per epoch, as with the CLI's tasks. Images of another size than the first are resized to it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from amalgam.errors import UserError
from amalgam.tasks.images import ImageSet
from amalgam.tasks.loader import UNLABELED

NO_LABEL = object()  # an item that is an image alone


def hf_columns(dataset: Any) -> tuple[str, str | None, list[str] | None] | None:
    """(image column, label column or None, the label's class names or None) of a Hugging Face
    dataset; None for anything else. Found from `features`: an `Image` feature (else a column
    called image/img), a `ClassLabel` (else a column called label/labels)."""
    features = getattr(dataset, "features", None)
    if not isinstance(getattr(dataset, "column_names", None), list) or not hasattr(features, "items"):
        return None
    kinds = {name: type(feature).__name__ for name, feature in features.items()}
    image = next((n for n, k in kinds.items() if k == "Image"), None)
    image = image or next((n for n in ("image", "img") if n in kinds), None)
    if image is None:
        raise UserError(f"the Hugging Face dataset has no image column (columns {list(kinds)}); "
                        "name it image or cast it to datasets.Image")
    label = next((n for n, k in kinds.items() if k == "ClassLabel"), None)
    label = label or next((n for n in ("label", "labels") if n in kinds), None)
    names = getattr(features[label], "names", None) if label else None
    return image, label, list(names) if names else None


def image_tensor(image: Any, where: str) -> torch.Tensor:
    """One image as uint8 [C, H, W] with C 1 or 3."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        image = np.array(image if image.mode in ("L", "RGB") else image.convert("RGB"))  # a writable copy
    if isinstance(image, np.ndarray):
        array = image if image.ndim == 3 else image[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
            raise UserError(f"{where} is an array of shape {image.shape}; give H x W x C images (C 1 or 3)")
        image = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1)
        if image.dtype != torch.uint8:
            image = image.float() / (255.0 if image.max() > 1 else 1.0)
    if not isinstance(image, torch.Tensor):
        raise UserError(f"{where} is a {type(image).__name__}; give PIL images or CHW tensors")
    if image.ndim == 2:
        image = image[None]
    if image.ndim == 3 and image.shape[0] not in (1, 3) and image.shape[-1] in (1, 3):
        image = image.permute(2, 0, 1)  # HWC, as `datasets` gives with_format("torch")
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise UserError(f"{where} has shape {tuple(image.shape)}; give CHW tensors with 1 or 3 channels")
    if image.dtype == torch.uint8:
        return image
    if not image.is_floating_point():
        raise UserError(f"{where} is a {image.dtype} tensor; give uint8 or float images in [0, 1]")
    low, high = float(image.min()), float(image.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise UserError(
            f"{where} has values in [{low:.2f}, {high:.2f}], not [0, 1]; drop Normalize from the transform "
            "(amalgam normalises for each model itself) or give uint8 images"
        )
    return image.clamp(0, 1).mul(255).round().to(torch.uint8)


def label_index(label: Any, classes: Sequence[str], where: str) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        label = label.item()
    if isinstance(label, str):
        if label not in classes:
            raise UserError(f"{where} has class name {label!r}, which is not in classes {list(classes)}; "
                            "use names from classes")
        return classes.index(label)
    if not isinstance(label, numbers.Integral) or isinstance(label, bool):
        raise UserError(f"{where} has label {label!r}; labels are ints into classes (0..{len(classes) - 1})")
    if not 0 <= int(label) < len(classes):
        raise UserError(f"{where} has label {int(label)}, not an index into the {len(classes)} classes "
                        f"(0..{len(classes) - 1}); labels are ints into classes")
    return int(label)


def split_item(item: Any) -> tuple[Any, Any]:
    """(image, label) of one item; label NO_LABEL for an image alone."""
    if isinstance(item, tuple | list):
        if len(item) == 2:
            return item[0], item[1]
        if len(item) == 1:
            return item[0], NO_LABEL
        raise UserError(f"a dataset item holds {len(item)} values; yield (image, label) or an image alone")
    return item, NO_LABEL


def read_items(dataset: Any, classes: Sequence[str], name: str) -> tuple[list[torch.Tensor], list[Any]]:
    """Every item's image (uint8 CHW) and label (an index into classes, or NO_LABEL)."""
    columns = hf_columns(dataset)
    remap = None
    if columns is not None and columns[2] is not None and set(columns[2]) <= set(classes):
        remap = [list(classes).index(c) for c in columns[2]]  # ClassLabel ints follow its own names
    images, labels = [], []
    for i in range(len(dataset)):
        where = f"item {i} of the {name} Dataset"
        item = dataset[i]
        if columns is not None:
            image_column, label_column, _ = columns
            image, label = item[image_column], item[label_column] if label_column else NO_LABEL
            if remap is not None and label is not NO_LABEL:
                label = remap[int(label)]
        else:
            image, label = split_item(item)
        images.append(image_tensor(image, where))
        labels.append(NO_LABEL if label is NO_LABEL else label_index(label, classes, where))
    return images, labels


def to_image_set(
    dataset: Any, classes: Sequence[str], name: str, needs_labels: bool, why: str = "",
    like: ImageSet | None = None,
) -> ImageSet:
    """The dataset as one uint8 image set; images without labels get UNLABELED, or, when
    `needs_labels`, are refused with `why` (what reads the labels). With `like`, its images
    take that set's channels and size (validation beside training)."""
    try:
        count = len(dataset)
    except TypeError:
        raise UserError(f"the {name} Dataset has no len(); give a map-style Dataset "
                        "(__len__ and __getitem__)") from None
    if count == 0:
        raise UserError(f"the {name} Dataset is empty; give it images")
    images, labels = read_items(dataset, classes, name)
    if needs_labels and any(label is NO_LABEL for label in labels):
        raise UserError(f"the {name} Dataset yields images without labels, but {why}; "
                        "yield (image, label) pairs")
    channels = 3 if any(image.shape[0] == 3 for image in images) else 1
    size = tuple(images[0].shape[1:])
    if like is not None:
        channels, size = int(like.images.shape[1]), tuple(like.images.shape[2:])
    stacked = torch.stack([fit_image(image, channels, size) for image in images])
    label_tensor = torch.tensor([UNLABELED if label is NO_LABEL else label for label in labels],
                                dtype=torch.long)
    return ImageSet(stacked, label_tensor)


def fit_image(image: torch.Tensor, channels: int, size: tuple[int, ...]) -> torch.Tensor:
    if image.shape[0] != channels:  # grey to colour by repeating; colour to grey by averaging
        grey = channels == 1
        image = image.float().mean(0, keepdim=True).round() if grey else image.expand(channels, -1, -1)
        image = image.to(torch.uint8)
    if tuple(image.shape[1:]) != size:
        resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False,
                                antialias=True)
        image = resized[0].round().clamp(0, 255).to(torch.uint8)
    return image
