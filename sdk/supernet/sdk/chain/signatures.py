"""The one signature form every Supernet check accepts: the form the contracts accept.

The contracts recover signers with OpenZeppelin's ``ECDSA.tryRecover``, which refuses an ``s`` in
the upper half of the curve order (the malleable twin of a valid signature) and a ``v`` other than
27 or 28. eth-account accepts both, so an off-chain check built on it alone would call "valid" a
signature the chain refuses: a node could hand a user a promise that verifies in the client but
can never be claimed (docs/validator.md, "Known limits" before this rule). Every recovery in the
SDK goes through `require_canonical` first, so off-chain and on-chain judge the same bytes.
"""

from __future__ import annotations

SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
"""Half the secp256k1 group order: the largest ``s`` a canonical signature has (EIP-2)."""


class NonCanonicalSignature(ValueError):
    """A signature the contracts refuse: not 65 bytes, ``v`` not 27/28, or ``s`` above n/2."""


def require_canonical(signature: bytes) -> bytes:
    """``signature`` itself, if it is a 65-byte ``r ‖ s ‖ v`` the contracts accept.

    Raises:
        NonCanonicalSignature: what is wrong with it.
    """
    if len(signature) != 65:
        raise NonCanonicalSignature(f"a signature is 65 bytes, got {len(signature)}")
    if signature[64] not in (27, 28):
        raise NonCanonicalSignature(f"signature v is {signature[64]}, not 27 or 28")
    if int.from_bytes(signature[32:64], "big") > SECP256K1_HALF_N:
        raise NonCanonicalSignature("signature s is in the upper half of the curve order (malleable form)")
    return signature
