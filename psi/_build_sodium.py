"""cffi builder for ``psi._sodium``: batched ristretto255 loops over libsodium.

Built at install time (``setup.py`` names it in ``cffi_modules``), against the system libsodium
(Debian: ``libsodium-dev`` to build, ``libsodium23`` to run). PyNaCl does not expose the
ristretto255 functions, so we bind them ourselves, out of line (API mode): each entry point below
runs a whole batch in C, and cffi releases the GIL around every call, so Python threads can run
chunks of one batch on all cores.

Contract shared by every batch function: inputs are packed arrays (``n`` items of 32 bytes, or a
byte blob plus ``n + 1`` offsets for variable-length messages); the return value is 0 on success or
``i + 1`` for the first item ``i`` that was rejected (identity or non-canonical point, zero or
non-canonical scalar); output for items before ``i`` is written, after ``i`` undefined.
"""

from __future__ import annotations

from cffi import FFI  # type: ignore[import-untyped]  # build-time only, no stubs

__all__ = ["ffibuilder"]

CDEF = """
int psi_init(void);
int crypto_scalarmult_ristretto255_base(unsigned char *q, const unsigned char *n);
int psi_hash_to_scalar(const unsigned char *msg, size_t msg_len,
                       const unsigned char *dst, size_t dst_len, unsigned char *out);
size_t psi_hash_to_group(const unsigned char *msgs, const size_t *offsets, size_t n,
                         const unsigned char *dst, size_t dst_len, unsigned char *out);
size_t psi_scalarmult(const unsigned char *scalars, size_t scalar_stride,
                      const unsigned char *points, size_t n, unsigned char *out);
size_t psi_scalar_random(size_t n, unsigned char *out);
size_t psi_scalar_invert(const unsigned char *scalars, size_t n, unsigned char *out,
                         unsigned char *scratch);
size_t psi_finalize(const unsigned char *msgs, const size_t *offsets, size_t n,
                    const unsigned char *elements, unsigned char *out);
size_t psi_element_digest(const unsigned char *elements, size_t n,
                          const unsigned char *label, size_t label_len, unsigned char *out);
"""

SOURCE = r"""
#include <sodium.h>
#include <stdint.h>
#include <string.h>

#define NE 32   /* Ne: serialized element */
#define NS 32   /* Ns: serialized scalar */
#define NH 64   /* Nh: SHA-512 output */

/* L, the order of the ristretto255 group, little-endian. */
static const unsigned char ORDER[NS] = {
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};

/* A scalar is valid when 0 < s < L (canonical little-endian, not zero). */
static int scalar_ok(const unsigned char *s) {
    int i;
    if (sodium_is_zero(s, NS)) return 0;
    for (i = NS - 1; i >= 0; i--) {
        if (s[i] < ORDER[i]) return 1;
        if (s[i] > ORDER[i]) return 0;
    }
    return 0; /* equal to L */
}

/* expand_message_xmd(SHA-512), RFC 9380 5.3.1, with len_in_bytes = 64, so ell = 1. */
static void xmd64(const unsigned char *msg, size_t msg_len, const unsigned char *dst,
                  size_t dst_len, unsigned char *out) {
    static const unsigned char z_pad[128] = {0};
    const unsigned char l_i_b_0[3] = {0x00, 0x40, 0x00};
    const unsigned char one = 0x01;
    const unsigned char dst_len_byte = (unsigned char) dst_len;
    unsigned char b0[NH];
    crypto_hash_sha512_state st;

    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, z_pad, sizeof z_pad);
    crypto_hash_sha512_update(&st, msg, msg_len);
    crypto_hash_sha512_update(&st, l_i_b_0, sizeof l_i_b_0);
    crypto_hash_sha512_update(&st, dst, dst_len);
    crypto_hash_sha512_update(&st, &dst_len_byte, 1);
    crypto_hash_sha512_final(&st, b0);

    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, b0, sizeof b0);
    crypto_hash_sha512_update(&st, &one, 1);
    crypto_hash_sha512_update(&st, dst, dst_len);
    crypto_hash_sha512_update(&st, &dst_len_byte, 1);
    crypto_hash_sha512_final(&st, out);
    sodium_memzero(b0, sizeof b0);
}

int psi_init(void) { return sodium_init(); }

/* HashToScalar: xmd64 then reduce mod L. Returns 0, or 1 if the DST is too long or s = 0. */
int psi_hash_to_scalar(const unsigned char *msg, size_t msg_len, const unsigned char *dst,
                       size_t dst_len, unsigned char *out) {
    unsigned char uniform[NH];
    if (dst_len > 255) return 1;
    xmd64(msg, msg_len, dst, dst_len, uniform);
    crypto_core_ristretto255_scalar_reduce(out, uniform);
    sodium_memzero(uniform, sizeof uniform);
    return sodium_is_zero(out, NS) ? 1 : 0;
}

/* HashToGroup for a batch: xmd64 then the ristretto255 one-way map. */
size_t psi_hash_to_group(const unsigned char *msgs, const size_t *offsets, size_t n,
                         const unsigned char *dst, size_t dst_len, unsigned char *out) {
    unsigned char uniform[NH];
    size_t i;
    if (dst_len > 255) return n ? 1 : 0;
    for (i = 0; i < n; i++) {
        xmd64(msgs + offsets[i], offsets[i + 1] - offsets[i], dst, dst_len, uniform);
        crypto_core_ristretto255_from_hash(out + i * NE, uniform);
        if (sodium_is_zero(out + i * NE, NE)) return i + 1;
    }
    return 0;
}

/* out[i] = scalars[i * stride] * points[i]; stride 0 multiplies every point by one scalar. */
size_t psi_scalarmult(const unsigned char *scalars, size_t scalar_stride,
                      const unsigned char *points, size_t n, unsigned char *out) {
    size_t i;
    for (i = 0; i < n; i++) {
        const unsigned char *s = scalars + i * scalar_stride;
        const unsigned char *p = points + i * NE;
        if (!scalar_ok(s) || sodium_is_zero(p, NE)) return i + 1;
        /* libsodium returns -1 for a non-canonical encoding (its decoder checks, so a separate
           crypto_core_ristretto255_is_valid_point would decode twice) and for an identity
           product, which a valid scalar and a non-identity point never give. */
        if (crypto_scalarmult_ristretto255(out + i * NE, s, p) != 0) return i + 1;
    }
    return 0;
}

/* n uniformly random scalars in [1, L). */
size_t psi_scalar_random(size_t n, unsigned char *out) {
    size_t i;
    for (i = 0; i < n; i++) crypto_core_ristretto255_scalar_random(out + i * NS);
    return 0;
}

/* Batch inversion (Montgomery's trick): one inversion and 3(n - 1) multiplications.
   scratch holds n prefix products. */
size_t psi_scalar_invert(const unsigned char *scalars, size_t n, unsigned char *out,
                         unsigned char *scratch) {
    unsigned char acc[NS];
    size_t i;
    if (n == 0) return 0;
    for (i = 0; i < n; i++) {
        if (!scalar_ok(scalars + i * NS)) return i + 1;
    }
    memcpy(scratch, scalars, NS);
    for (i = 1; i < n; i++) {
        crypto_core_ristretto255_scalar_mul(scratch + i * NS, scratch + (i - 1) * NS,
                                            scalars + i * NS);
    }
    if (crypto_core_ristretto255_scalar_invert(acc, scratch + (n - 1) * NS) != 0) return 1;
    for (i = n - 1; i > 0; i--) {
        crypto_core_ristretto255_scalar_mul(out + i * NS, acc, scratch + (i - 1) * NS);
        crypto_core_ristretto255_scalar_mul(acc, acc, scalars + i * NS);
    }
    memcpy(out, acc, NS);
    sodium_memzero(acc, sizeof acc);
    sodium_memzero(scratch, n * NS);
    return 0;
}

/* RFC 9497 Finalize's hash: SHA-512(I2OSP(len(input), 2) || input || I2OSP(Ne, 2) ||
   element || "Finalize"). Inputs longer than 65535 bytes are rejected. */
size_t psi_finalize(const unsigned char *msgs, const size_t *offsets, size_t n,
                    const unsigned char *elements, unsigned char *out) {
    static const unsigned char ne_len[2] = {0x00, NE};
    static const unsigned char label[8] = {'F', 'i', 'n', 'a', 'l', 'i', 'z', 'e'};
    crypto_hash_sha512_state st;
    size_t i;
    for (i = 0; i < n; i++) {
        size_t len = offsets[i + 1] - offsets[i];
        unsigned char len_be[2];
        if (len > 0xffff) return i + 1;
        len_be[0] = (unsigned char) (len >> 8);
        len_be[1] = (unsigned char) len;
        crypto_hash_sha512_init(&st);
        crypto_hash_sha512_update(&st, len_be, 2);
        crypto_hash_sha512_update(&st, msgs + offsets[i], len);
        crypto_hash_sha512_update(&st, ne_len, 2);
        crypto_hash_sha512_update(&st, elements + i * NE, NE);
        crypto_hash_sha512_update(&st, label, sizeof label);
        crypto_hash_sha512_final(&st, out + i * NH);
    }
    return 0;
}

/* SHA-512(I2OSP(Ne, 2) || element || label) for a batch of elements (input-free digest). */
size_t psi_element_digest(const unsigned char *elements, size_t n, const unsigned char *label,
                          size_t label_len, unsigned char *out) {
    static const unsigned char ne_len[2] = {0x00, NE};
    crypto_hash_sha512_state st;
    size_t i;
    for (i = 0; i < n; i++) {
        crypto_hash_sha512_init(&st);
        crypto_hash_sha512_update(&st, ne_len, 2);
        crypto_hash_sha512_update(&st, elements + i * NE, NE);
        crypto_hash_sha512_update(&st, label, label_len);
        crypto_hash_sha512_final(&st, out + i * NH);
    }
    return 0;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "psi._sodium", SOURCE, libraries=["sodium"], extra_compile_args=["-O2", "-std=c99"]
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
