"""Raw memory loads for numba kernels: one byte or one 8-byte word at an address.

Kernels pass addresses (``array.ctypes.data + offset``) to their per-item helpers instead
of arrays: numba updates an array's reference count, an atomic operation, around every
helper call that receives it, even an inlined one, and in the per-label and per-field
loops that cost more than the work itself (it halved the remote-write decoder's speed).
The loads have no bounds check and no alignment requirement: callers check the bounds
and pass addresses into C-contiguous arrays.
"""

from __future__ import annotations

from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.extending import intrinsic

__all__ = ["load_u8", "load_u64"]


def _loader(bits: int):  # type: ignore[no-untyped-def]
    @intrinsic
    def load(typingctx, address):  # type: ignore[no-untyped-def]
        sig = getattr(types, f"uint{bits}")(types.uintp)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            pointer = builder.inttoptr(args[0], ir.IntType(bits).as_pointer())
            return builder.load(pointer, align=1)

        return sig, codegen

    return load


load_u8 = _loader(8)
load_u8.__doc__ = "The byte at ``address``."
load_u64 = _loader(64)
load_u64.__doc__ = "The 8 bytes at ``address`` as one native-endian word, at any alignment."
