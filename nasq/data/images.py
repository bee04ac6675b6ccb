"""``image_folder``: one sub-folder per class (sorted names are the class ids) of PNG/JPEG files,
or ``train/`` and ``test/`` folders each laid out so (a given split).

Images are decoded through Pillow in batches, converted to grey (L) or RGB by the space's channel
count and resized to its resolution, into one preallocated uint8 array: in memory below
``MEMMAP_BYTES``, else a ``.npy`` memmap in the caller's cache folder - so decoding holds one batch
of images at a time. (``Splits`` then holds float32 copies of the samples it is asked for:
``train_limit``/``test_limit`` bound that part.)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from nasq.data.base import SOURCES, DataSource, Probe, Raw, expected_shape
from nasq.errors import ConfigError, MissingDependencyError

EXTENSIONS = (".png", ".jpg", ".jpeg")
BATCH = 256  # images decoded between writes into the preallocated array
MEMMAP_BYTES = 256 << 20  # decoded uint8 bytes above which the array lives on disk (cache folder)


def _pil():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise MissingDependencyError("the image_folder data source needs Pillow: pip install pillow") from e
    return Image, UnidentifiedImageError


def _classes(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _listing(folder: Path, names: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names and (file, class id) pairs; ``names`` fixes the classes (a test folder)."""
    dirs = _classes(folder)
    if not dirs:
        raise ConfigError(str(folder), "classes", "no class sub-folders (need one folder of images per class)")
    found = [d.name for d in dirs]
    names = names or found
    extra = sorted(set(found) - set(names))
    if extra:
        raise ConfigError(str(folder / extra[0]), "class", f"not a class of the training folder ({', '.join(names)})")
    files: list[tuple[Path, int]] = []
    for d in dirs:
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not imgs:
            raise ConfigError(str(d), "class", f"class {d.name!r} has no {'/'.join(EXTENSIONS)} images")
        files += [(p, names.index(d.name)) for p in imgs]
    return names, files


@SOURCES.register("image_folder")
class ImageFolderSource(DataSource):
    kind = "image_folder"
    memmap_bytes = MEMMAP_BYTES

    def _layout(self) -> tuple[Path, Path | None]:
        root = self.path
        if not root.is_dir():
            raise ConfigError(self.source, "data.path", f"{str(root)!r} is not a folder")
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root / "train", root / "test"
        return root, None

    def _target(self, first: Path) -> tuple[int, int, int]:
        want = expected_shape(self.space)
        if want is not None:
            if len(want) != 3 or want[0] not in (1, 3):
                raise ConfigError(str(self.path), "shape", f"images become 1 or 3 channels x H x W; "
                                  f"the space {self.space.name} takes {'x'.join(map(str, want))}")
            return want
        Image, _ = _pil()  # no space: the first image says (tests, inspection)
        with self._open(first, Image) as im:
            return (1 if im.mode in ("1", "L", "I", "F", "P") else 3, im.height, im.width)

    def _open(self, path: Path, image_mod):
        _, unidentified = _pil()
        try:
            im = image_mod.open(path)
            im.load()
            return im
        except (OSError, unidentified, ValueError) as e:
            raise ConfigError(str(path), "image", f"cannot decode: {str(e)[:120]}") from e

    def _probe(self) -> Probe:
        train, test = self._layout()
        names, files = _listing(train)
        if test is not None:
            _listing(test, names)
        return Probe(self._target(files[0][0]), len(names), str(self.path))

    def _read(self) -> Raw:
        train, test = self._layout()
        names, files = _listing(train)
        shape = self._target(files[0][0])
        x, y = self._decode(files, shape, "train")
        raw = Raw(x, y, str(self.path), scale=255.0, class_names=tuple(names), num_classes=len(names),
                  note=f"{len(files)} images from {self.path}")
        if test is not None:
            raw.test_x, raw.test_y = self._decode(_listing(test, names)[1], shape, "test")
        return raw

    def _decode(self, files: list[tuple[Path, int]], shape: tuple[int, int, int], part: str) -> tuple[np.ndarray, np.ndarray]:
        Image, _ = _pil()
        c, h, w = shape
        mode = "L" if c == 1 else "RGB"
        out, final = self._allocate((len(files), c, h, w), part)
        try:
            for lo in range(0, len(files), BATCH):
                batch = []
                for path, _ in files[lo:lo + BATCH]:
                    with self._open(path, Image) as im:
                        im = im.convert(mode)
                        if im.size != (w, h):
                            im = im.resize((w, h), Image.Resampling.BILINEAR)
                        arr = np.asarray(im, dtype=np.uint8)
                    batch.append(arr[None] if c == 1 else arr.transpose(2, 0, 1))
                out[lo:lo + len(batch)] = np.stack(batch)
        except BaseException:
            if final is not None:  # nothing half-written stays in the cache
                del out
                with contextlib.suppress(OSError):
                    os.unlink(final.with_suffix(".partial"))
            raise
        if final is not None:
            out.flush()
            os.replace(final.with_suffix(".partial"), final)
            out = np.load(final, mmap_mode="r")
        return out, np.array([label for _, label in files], dtype=np.int64)

    def _allocate(self, shape: tuple[int, ...], part: str) -> tuple[np.ndarray, Path | None]:
        if self.cache_dir is None or int(np.prod(shape)) <= self.memmap_bytes:
            return np.empty(shape, dtype=np.uint8), None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        final = self.cache_dir / f"image_folder-{part}-{'x'.join(map(str, shape))}.npy"
        return np.lib.format.open_memmap(final.with_suffix(".partial"), mode="w+", dtype=np.uint8, shape=shape), final
