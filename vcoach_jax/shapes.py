"""Shape rounding shared by the host-side padders (sampler buckets, model batches, selector
text batches, eval batches, reward packing): one definition of "the next power of two"."""

from __future__ import annotations


def pow2(n: int) -> int:
  """Smallest power of two >= n (1 for n <= 1)."""
  return 1 << max(0, int(n) - 1).bit_length()
