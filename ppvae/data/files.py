"""A user's own images: a .npy / .pt array, or a folder of image files.

Arrays may be (N, H, W), (N, C, H, W) or channels-last (N, H, W, C), uint8 in
[0, 255] or float in [0, 1]. A folder is read with torchvision's image
decoding; sub-folders, if any, name the classes (as torchvision's
ImageFolder does). The image shape is taken from the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ppvae.data.dataset import ImageDataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}


def check_finite(x: torch.Tensor, source: str | None = None) -> None:
    """Refuse NaN and infinite pixels, which no likelihood can score (and binarisation would hide).

    A finite sum proves every pixel finite (NaN and infinities carry into it), in one pass that reads the
    data without writing a mask as large as it; only a sum that is not finite (bad pixels, or finite ones that
    overflow it) takes the pixel-by-pixel check."""
    if not x.is_floating_point() or bool(torch.isfinite(x.sum())):
        return
    if not torch.isfinite(x).all():
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1) if x.dim() > 1 else ~torch.isfinite(x)
        raise ValueError(
            f"{source + ': ' if source else ''}{int(bad.sum())} of {len(bad)} images hold NaN or infinite "
            "pixels (the first at "
            f"index {int(bad.nonzero()[0])}); remove or repair them"
        )


def as_image_tensor(array, source: str = "array") -> torch.Tensor:
    """Turn an array of images into float32 (N, C, H, W) in [0, 1], or say what is wrong with it."""
    if not isinstance(array, torch.Tensor):
        array = np.asarray(array)
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"{source}: images must be numbers (uint8 or floating point), got an array of {array.dtype}"
            )
    x = torch.as_tensor(array)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4:
        raise ValueError(
            f"{source}: expected images of shape (N, H, W), (N, C, H, W) or (N, H, W, C), got {tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0).contiguous()
    if not x.is_floating_point():
        raise ValueError(f"{source}: images must be uint8 or floating point, got {x.dtype}")
    x = x.to(torch.float32).contiguous()
    check_finite(x, source)
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{source}: float images must lie in [0, 1], found values in [{x.min():.3g}, {x.max():.3g}]; "
            "divide by 255 or rescale first"
        )
    return x


def _load_array(path: Path):
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("x", "images", "data"):
            if key in obj:
                return obj[key], obj.get("y", obj.get("labels", obj.get("targets")))
        raise ValueError(f"{path}: a dict must hold the images under 'x', 'images' or 'data'; found keys {sorted(obj)}")
    return obj


def read_image_file(path: Path) -> torch.Tensor:
    """One image file as uint8 (C, H, W), alpha dropped; a file that is not an image is a ValueError naming it."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        image = decode_image(str(path), mode=ImageReadMode.UNCHANGED)
    except RuntimeError:
        raise ValueError(
            f"{path}: not an image torchvision can decode (jpeg, png, webp or gif), or a damaged one; "
            "remove it from the folder"
        ) from None
    return image[:3] if image.shape[0] == 4 else image


def _read_folder(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found in this folder")
    classes = sorted({p.parent.relative_to(path).as_posix() for p in files} - {"."}) or None
    images, first = [], None
    for p in files:
        image = read_image_file(p)
        first = first if first is not None else image.shape
        if image.shape != first:
            raise ValueError(
                f"{p}: shape {tuple(image.shape)} differs from {tuple(first)}; all images must share one shape"
            )
        images.append(image)
    y = None
    if classes:
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index.get(p.parent.relative_to(path).as_posix(), -1) for p in files])
        if (y < 0).any():
            raise ValueError(f"{path}: images sit both at the top level and in class sub-folders; use one layout")
    return torch.stack(images), y, classes


def load_path(path: str | Path) -> ImageDataset:
    """Load images from a .npy / .pt file or a folder of image files."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    y, classes = None, None
    if path.is_dir():
        x, y, classes = _read_folder(path)
    elif path.suffix in (".npy", ".pt", ".pth"):
        x = _load_array(path)
        if isinstance(x, tuple):
            x, y = x
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .npy, .pt or a folder of images")
    x = as_image_tensor(x, str(path))
    if y is not None:
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    return ImageDataset(x, y, path.stem or path.name, "all", classes)
