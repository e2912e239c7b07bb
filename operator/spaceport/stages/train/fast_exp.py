"""``exp_neg(x) = e^-x`` for the compositing kernels, in a form the compiler can vectorise.

numba turns ``np.exp`` into a call to the C library's scalar ``expf`` (there is no vector maths library
in numba's LLVM here), and one scalar call per lane stops the loop vectoriser: the per-pixel loops of the
compositor then run one pixel at a time. For float32 this module supplies its own ``e^-x``: range
reduction ``x = n ln2 - r`` with ``|r| <= ln2 / 2``, a degree-7 Taylor polynomial of ``e^r`` (truncation
error below 6e-9, under float32's 6e-8 rounding step) and the power of two ``2^-n`` written straight
into a float's exponent bits, all of which vectorise (the bits are reinterpreted by a one-instruction
intrinsic; building the power from selects on the bits of ``n`` cost four times the instructions, a
sixth of the compositor's per-pixel work). Valid for ``0 <= x <= 10`` (callers clamp: the compositor
only needs ``x <= log(255)``). float64 keeps ``np.exp``, so the float64 gradient checks in the tests compare the
kernels' maths with the reference to ~1e-12 rather than with this approximation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

LOG2E = 1.4426950408889634
LN2_HI = 0.693145751953125  # ln 2 split so that n * LN2_HI is exact in float32 for |n| < 2^8
LN2_LO = 1.4286068203094173e-06
MAX_X = 10.0
"""Largest argument (``n <= 15``; the exponent bits would hold up to 126)."""
FLOAT32_BIAS, FLOAT32_MANTISSA_BITS = 127, 23


@intrinsic
def float32_from_bits(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 whose IEEE-754 bits are the int32 ``bits`` (LLVM ``bitcast``: free, and vectorisable)."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(bits), codegen


def exp_neg(x: float) -> float:
    """``e^-x``; compiled per dtype by the overload below (this body runs only outside numba)."""
    return float(np.exp(-x))


# numba requires the overload and its implementations to have identical signatures, annotations included:
# they are left unannotated (the typing function receives numba types, the implementations numbers).
@overload(exp_neg, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})
def _exp_neg(x) -> Callable[[float], float]:  # type: ignore[no-untyped-def]
    if isinstance(x, types.Float) and x.bitwidth == 32:
        f = np.float32

        def exp_neg_f32(x):  # type: ignore[no-untyped-def]
            n = np.floor(x * f(LOG2E) + f(0.5))
            r = n * f(LN2_HI) - x + n * f(LN2_LO)  # e^-x = e^r * 2^-n, |r| <= 0.347
            p = f(1.0 / 5040.0)
            p = p * r + f(1.0 / 720.0)
            p = p * r + f(1.0 / 120.0)
            p = p * r + f(1.0 / 24.0)
            p = p * r + f(1.0 / 6.0)
            p = p * r + f(0.5)
            p = p * r + f(1.0)
            p = p * r + f(1.0)
            two_to_minus_n = float32_from_bits(np.int32((FLOAT32_BIAS - np.int32(n)) << FLOAT32_MANTISSA_BITS))
            return p * two_to_minus_n

        return exp_neg_f32

    def exp_neg_any(x):  # type: ignore[no-untyped-def]
        return np.exp(-x)

    return exp_neg_any
