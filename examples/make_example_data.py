"""Write the data the examples/data_*.yaml experiments read into examples/data/ (ignored by git:
it is made from data that ships with packages, never downloaded, and rebuilt by this script).

    python examples/make_example_data.py      # from the repository root

- data/fashion_small.npz: 6,000 + 1,000 Fashion-MNIST images with given splits (Debian's
  dataset-fashion-mnist; scikit-learn digits upsampled to 28x28 when it is absent)
- data/fashion_png/: 2,000 of those images as PNG files, one folder per class
- data/wine.csv and data/wine.parquet: scikit-learn's wine table (13 features, 3 classes)
- data/GunPoint/: aeon's shipped GunPoint series (.ts; `pip install --no-deps aeon==1.3.0`)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from nasq.testing.sources import aeon_data, fashion_rows, wine_frame, write_image_folder

OUT = Path(__file__).resolve().parent / "data"


def images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train, test = fashion_rows(6000), fashion_rows(1000, "test")
    if train is not None and test is not None:
        return (*train, *test)
    from sklearn.datasets import load_digits

    print("Fashion-MNIST not found (apt-get install dataset-fashion-mnist); using scikit-learn digits")
    d = load_digits()
    x = np.kron(d.images * (255 / 16), np.ones((4, 4)))[:, 2:30, 2:30].astype(np.uint8)
    return x[:1500], d.target[:1500], x[1500:], d.target[1500:]


def main() -> int:
    OUT.mkdir(exist_ok=True)
    x_train, y_train, x_test, y_test = images()
    np.savez(OUT / "fashion_small.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    shutil.rmtree(OUT / "fashion_png", ignore_errors=True)
    write_image_folder(OUT / "fashion_png", x_train[:2000], y_train[:2000])
    wine = wine_frame()
    wine.to_csv(OUT / "wine.csv", index=False)
    wine.to_parquet(OUT / "wine.parquet")
    gunpoint = aeon_data("GunPoint")
    if gunpoint is None:
        print("aeon's data files are absent: pip install --no-deps aeon==1.3.0 (skipping GunPoint)")
    else:
        (OUT / "GunPoint").mkdir(exist_ok=True)
        for part in ("TRAIN", "TEST"):
            shutil.copy(gunpoint / f"GunPoint_{part}.ts", OUT / "GunPoint" / f"GunPoint_{part}.ts")
    print(f"wrote {', '.join(sorted(p.name for p in OUT.iterdir()))} to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
