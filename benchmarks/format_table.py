"""The table of numeric formats in docs/formats.md: bits, effective bits, dynamic range and SQNR
of every registered format on Gaussian and heavy-tailed data.

    python benchmarks/format_table.py            # prints the table and rewrites docs/formats.md
    python benchmarks/format_table.py --no-write # prints only

Data: 2**20 samples of N(0, 1) and of Student-t with nu = 3, from numpy's default Generator with
a fixed seed. Each format quantizes the whole tensor with its default range: one scale from the
tensor's absolute max for per-tensor formats; group and block formats compute their own scales.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nasq.formats import FORMATS, NumericFormat  # noqa: E402

SEED = 20240601
LOG2_SAMPLES = 20
ELEMENTS_PER_SCALE = 1024  # for formats whose scale is per tensor or per channel
COMMAND = "python benchmarks/format_table.py"
KIND_ORDER = ("none", "float", "int", "block")
COLUMNS = ("format", "kind", "bits", "effective bits", "dynamic range (dB)", "SQNR N(0,1) (dB)",
           "SQNR t(3) (dB)")


def datasets(seed: int, log2_samples: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    n = 2**log2_samples
    gauss = rng.standard_normal(n).astype(np.float32)
    heavy = rng.standard_t(3, n).astype(np.float32)
    return {"gauss": torch.from_numpy(gauss), "t3": torch.from_numpy(heavy)}


def sqnr_db(x: torch.Tensor, q: torch.Tensor) -> float:
    """10·log10(signal power / noise power), in float64; inf when nothing was lost."""
    x64, q64 = x.double(), q.double()
    noise = float((x64 - q64).pow(2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float(x64.pow(2).sum()) / noise)


def row(fmt: NumericFormat, data: dict[str, torch.Tensor]) -> list[str]:
    sqnr = [sqnr_db(x, fmt.quantize(x)) for x in data.values()]
    return [f"`{fmt.name}`", fmt.kind, str(fmt.bits), _num(fmt.effective_bits(ELEMENTS_PER_SCALE), 3),
            _num(fmt.dynamic_range_db(), 1), *(_num(v, 2) for v in sqnr)]


def _num(v: float, digits: int) -> str:
    return "lossless" if math.isinf(v) else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def _table_order(fmt: NumericFormat) -> tuple[int, int, str]:
    """Grouped by kind, widest first within a kind."""
    return (KIND_ORDER.index(fmt.kind), -fmt.bits, fmt.name)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def document(table: str, seed: int, log2_samples: int) -> str:
    today = datetime.now(UTC).date().isoformat()
    return f"""# Numeric formats

Every format registered in `nasq.formats.FORMATS`, measured by `benchmarks/format_table.py`
(`{COMMAND}`, run on {today} with torch {torch.__version__}). Rerun it after adding a format.

- **bits**: bits per element. **effective bits**: including scale storage — one fp32 scale per
  {ELEMENTS_PER_SCALE} elements for per-tensor/per-channel formats (the `_asym` ones also store a
  zero point), one fp32 scale per group for `_gN` formats, one E8M0 scale per 32 for MX, one
  E4M3 scale per 16 for NVFP4 (its single per-tensor fp32 scale is left out).
- **dynamic range**: 20·log10(largest / smallest positive magnitude under one scale): the
  largest code over one step for integers, the largest finite value over the smallest subnormal
  for floats, the element format's for block formats (whose scales widen it much further).
- **SQNR**: 10·log10(Σx² / Σ(x − q(x))²) on 2^{log2_samples} samples of N(0, 1) and of Student-t
  with ν = 3 (`numpy.random.default_rng({seed})`), each tensor quantized as a whole with the
  format's default range (scale from the absolute max; group and block formats set their own).

Naming: `intN` symmetric with `2^N − 1` levels; `_asym` unsigned codes with a zero point;
`_gN` one scale per N consecutive elements; `_mse` clipped at the MSE-optimal ratio (of 19; training searches it on a strided sample of 8,192
elements per tensor); `_lsq`
learns its step when trained (the same values as `intN` otherwise). Block formats: `mxfp8` has
E4M3 elements, `mxfp6` E2M3, `mxfp6_e3m2` E3M2, `mxfp4` and `nvfp4` E2M1.

{table}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "formats.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--log2-samples", type=int, default=LOG2_SAMPLES)
    args = parser.parse_args(argv)
    data = datasets(args.seed, args.log2_samples)
    formats = sorted((FORMATS.get(n) for n in FORMATS.names()), key=_table_order)
    rows = [row(fmt, data) for fmt in formats]
    table = markdown_table(rows)
    print(table)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(document(table, args.seed, args.log2_samples), encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
