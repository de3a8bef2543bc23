"""cffi builder for ``core._rowhash``: the digest's encoding and SHA-256 of every row, in one call.

Built at install time (``setup.py`` names it in ``cffi_modules``), out of line (API mode),
against the system OpenSSL's libcrypto (Debian: ``libssl-dev`` to build, ``libssl3`` to run;
CPython's ``hashlib`` links the same library). The digest's row hashes (:mod:`core.digest`) were
a ``hashlib.sha256`` call per row from Python, then one call here over rows joined by pyarrow
(``binary_join_element_wise`` of a prefix and a payload array per column, built with numpy and
pyarrow casts); now the rows are encoded here too, from the columns' Arrow buffers, with the GIL
released (cffi releases it around every call). libcrypto rather than libsodium: its SHA-256
uses the CPU's SHA extensions or AVX2 where present, libsodium's is portable C.

Contract of ``rowhash_rows``: ``columns`` describes ``ncolumns`` Arrow arrays of ``n`` values
each, in schema order (see the comment above it in ``SOURCE``); ``out`` receives ``n`` digests
of 32 bytes. Returns 0 or an error code (a value or row too long to encode, no memory, OpenSSL
failing). ``tests/unit/test_digest.py`` holds it to ``encode_value`` and ``hashlib``.
"""

from __future__ import annotations

from cffi import FFI  # type: ignore[import-untyped]  # build-time only, no stubs

__all__ = ["ffibuilder"]

CDEF = """
typedef struct {
    int kind;
    unsigned char tag;
    int64_t offset;
    const unsigned char *validity;
    const void *offsets;
    const void *values;
} rowhash_column;

int rowhash_rows(const rowhash_column *columns, size_t ncolumns, size_t n, unsigned char *out);
"""

SOURCE = (
    r"""
#include <math.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* rowhash_rows: the digest's row encoding (core.digest.encode_value) of whole Arrow columns,
   each row's SHA-256 into out (n x 32 bytes). A row is b"R", its length (4 bytes big-endian)
   and its values' encodings in column order; a value is b"N" when null, else its tag, the
   payload's length (4 bytes big-endian) and the payload, except a boolean (b"T" or b"F") and a
   pre-encoded value (RH_ENCODED: its whole encoding as given). Payloads: bytes as they are,
   integers and timestamps' epoch micros in decimal (str(int)), floats as float.hex.
   Columns are Arrow's buffers as they lie: `offset` is the array's (a slice's) first value,
   `validity` its bitmap (NULL: no nulls). Returns 0, or RH_TOO_LONG (a value or row longer
   than 2**32 - 1 bytes), RH_NO_MEMORY, RH_NO_SHA256 (OpenSSL failed). */

enum { RH_BYTES32 = 0, RH_BYTES64 = 1, RH_INT32 = 2, RH_INT64 = 3, RH_DOUBLE = 4, RH_BOOL = 5,
       RH_ENCODED = 6 };
enum { RH_TOO_LONG = 1, RH_NO_MEMORY = 2, RH_NO_SHA256 = 3 };
"""
    + CDEF
    + r"""
typedef struct {
    unsigned char *data;
    size_t size, capacity;
} rowhash_buffer;

static int rh_reserve(rowhash_buffer *b, size_t more) {
    size_t need = b->size + more;
    unsigned char *grown;
    if (need <= b->capacity) return 0;
    if (need < b->capacity * 2) need = b->capacity * 2;
    grown = realloc(b->data, need);
    if (grown == NULL) return RH_NO_MEMORY;
    b->data = grown;
    b->capacity = need;
    return 0;
}

static void rh_length(unsigned char *at, uint64_t n) {
    at[0] = (unsigned char) (n >> 24);
    at[1] = (unsigned char) (n >> 16);
    at[2] = (unsigned char) (n >> 8);
    at[3] = (unsigned char) n;
}

/* str(v): at most 20 bytes. */
static size_t rh_decimal(int64_t v, unsigned char *p) {
    unsigned char digits[20];
    uint64_t u = v < 0 ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;
    size_t k = 0, i = 0;
    do {
        digits[k++] = (unsigned char) ('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) p[i++] = '-';
    while (k) p[i++] = digits[--k];
    return i;
}

/* float.hex(x), every NaN "nan" (CPython's float_hex, from the IEEE 754 bits): at most 24 bytes. */
static size_t rh_float_hex(double x, unsigned char *p) {
    static const char hex[] = "0123456789abcdef";
    uint64_t bits;
    int64_t exponent;
    size_t i = 0;
    int k;
    memcpy(&bits, &x, 8);
    if (isnan(x)) { memcpy(p, "nan", 3); return 3; }
    if (isinf(x)) {
        if (x < 0) { memcpy(p, "-inf", 4); return 4; }
        memcpy(p, "inf", 3);
        return 3;
    }
    if (bits >> 63) p[i++] = '-';
    if (x == 0.0) { memcpy(p + i, "0x0.0p+0", 8); return i + 8; }
    exponent = (int64_t) ((bits >> 52) & 0x7FF);
    p[i++] = '0';
    p[i++] = 'x';
    p[i++] = exponent == 0 ? '0' : '1';  /* subnormal: 0x0.<mantissa>p-1022 */
    p[i++] = '.';
    for (k = 48; k >= 0; k -= 4) p[i++] = (unsigned char) hex[(bits >> k) & 0xF];
    p[i++] = 'p';
    exponent = exponent == 0 ? -1022 : exponent - 1023;
    if (exponent >= 0) p[i++] = '+';
    return i + rh_decimal(exponent, p + i);
}

static int rh_bit(const unsigned char *bitmap, int64_t i) {
    return (bitmap[i >> 3] >> (i & 7)) & 1;
}

/* One value of one column, appended to b. */
static int rh_value(const rowhash_column *c, int64_t i, rowhash_buffer *b) {
    int64_t at = c->offset + i;
    const unsigned char *bytes;
    uint64_t n;
    size_t start;
    if (c->validity != NULL && !rh_bit(c->validity, at)) {
        if (rh_reserve(b, 1)) return RH_NO_MEMORY;
        b->data[b->size++] = 'N';
        return 0;
    }
    switch (c->kind) {
    case RH_BOOL:
        if (rh_reserve(b, 1)) return RH_NO_MEMORY;
        b->data[b->size++] = rh_bit(c->values, at) ? 'T' : 'F';
        return 0;
    case RH_BYTES32:
    case RH_BYTES64:
    case RH_ENCODED:
        if (c->kind == RH_BYTES32) {
            const int32_t *o = c->offsets;
            bytes = (const unsigned char *) c->values + o[at];
            n = (uint64_t) ((int64_t) o[at + 1] - o[at]);
        } else {
            const int64_t *o = c->offsets;
            bytes = (const unsigned char *) c->values + o[at];
            n = (uint64_t) (o[at + 1] - o[at]);
        }
        if (c->kind == RH_ENCODED) {
            if (rh_reserve(b, n)) return RH_NO_MEMORY;
            if (n) memcpy(b->data + b->size, bytes, n);
            b->size += n;
            return 0;
        }
        if (n > 0xFFFFFFFFu) return RH_TOO_LONG;
        if (rh_reserve(b, 5 + n)) return RH_NO_MEMORY;
        b->data[b->size] = c->tag;
        rh_length(b->data + b->size + 1, n);
        if (n) memcpy(b->data + b->size + 5, bytes, n);
        b->size += 5 + n;
        return 0;
    default:
        if (rh_reserve(b, 5 + 32)) return RH_NO_MEMORY;
        start = b->size;
        b->data[start] = c->tag;
        if (c->kind == RH_INT32) {
            n = rh_decimal(((const int32_t *) c->values)[at], b->data + start + 5);
        } else if (c->kind == RH_INT64) {
            n = rh_decimal(((const int64_t *) c->values)[at], b->data + start + 5);
        } else {
            n = rh_float_hex(((const double *) c->values)[at], b->data + start + 5);
        }
        rh_length(b->data + start + 1, n);
        b->size = start + 5 + n;
        return 0;
    }
}

int rowhash_rows(const rowhash_column *columns, size_t ncolumns, size_t n, unsigned char *out) {
    rowhash_buffer row = {NULL, 0, 0};
    EVP_MD *md;
    EVP_MD_CTX *ctx;
    unsigned int len;
    size_t i, j;
    int failed = 0;
    if (n == 0) return 0;
    /* One fetched SHA-256 and one context per call, reused for every row: OpenSSL 3's one-shot
       SHA256() fetches the algorithm from its provider on each call (0.54 us a 425-byte row,
       against 0.25 us reusing them). Per call, not static: calls may run on several threads. */
    md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx = EVP_MD_CTX_new();
    if (md == NULL || ctx == NULL) failed = RH_NO_SHA256;
    else if (rh_reserve(&row, 1024)) failed = RH_NO_MEMORY;
    for (i = 0; i < n && !failed; i++) {
        row.size = 5;
        for (j = 0; j < ncolumns && !failed; j++) failed = rh_value(&columns[j], (int64_t) i, &row);
        if (failed) break;
        if (row.size - 5 > 0xFFFFFFFFu) { failed = RH_TOO_LONG; break; }
        row.data[0] = 'R';
        rh_length(row.data + 1, row.size - 5);
        if (!EVP_DigestInit_ex2(ctx, md, NULL) || !EVP_DigestUpdate(ctx, row.data, row.size)
            || !EVP_DigestFinal_ex(ctx, out + i * 32, &len) || len != 32) {
            failed = RH_NO_SHA256;
        }
    }
    free(row.data);
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
    return failed;
}
"""
)

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "core._rowhash", SOURCE, libraries=["crypto"], extra_compile_args=["-O2", "-std=c99"]
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
