"""cffi builder for ``core._rowhash``: SHA-256 of many byte ranges of one buffer, in one call.

Built at install time (``setup.py`` names it in ``cffi_modules``), out of line (API mode),
against the system OpenSSL's libcrypto (Debian: ``libssl-dev`` to build, ``libssl3`` to run;
CPython's ``hashlib`` links the same library). The digest's row hashes (:mod:`core.digest`) were
a ``hashlib.sha256`` call per row from Python; the loop here hashes a whole slice's rows with the
GIL released (cffi releases it around every call). libcrypto rather than libsodium: its SHA-256
uses the CPU's SHA extensions or AVX2 where present, libsodium's is portable C.

Contract: ``data`` holds the rows back to back, row ``i`` is ``data[offsets[i]:offsets[i + 1]]``
(Arrow's large_binary offsets, so int64); ``out`` receives ``n`` digests of 32 bytes. Returns 0,
or ``i + 1`` for the first row ``i`` that failed (offsets going backwards, or OpenSSL failing:
no SHA-256 in its provider); rows from it on are not hashed.
"""

from __future__ import annotations

from cffi import FFI  # type: ignore[import-untyped]  # build-time only, no stubs

__all__ = ["ffibuilder"]

CDEF = """
size_t rowhash_sha256(const unsigned char *data, const int64_t *offsets, size_t n,
                      unsigned char *out);
"""

SOURCE = r"""
#include <openssl/evp.h>
#include <stdint.h>

/* One fetched SHA-256 and one context per call, reused for every row: OpenSSL 3's one-shot
   SHA256() fetches the algorithm from its provider on each call (0.54 us a 425-byte row here,
   against 0.25 us reusing them). Per call, not static: calls may run on several threads. */
size_t rowhash_sha256(const unsigned char *data, const int64_t *offsets, size_t n,
                      unsigned char *out) {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
    unsigned int len;
    size_t i, failed = 0;
    if (n == 0) return 0;
    md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx = EVP_MD_CTX_new();
    if (md == NULL || ctx == NULL) {
        failed = 1;
    } else {
        for (i = 0; i < n; i++) {
            if (offsets[i + 1] < offsets[i]
                || !EVP_DigestInit_ex2(ctx, md, NULL)
                || !EVP_DigestUpdate(ctx, data + offsets[i], (size_t) (offsets[i + 1] - offsets[i]))
                || !EVP_DigestFinal_ex(ctx, out + i * 32, &len) || len != 32) {
                failed = i + 1;
                break;
            }
        }
    }
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
    return failed;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "core._rowhash", SOURCE, libraries=["crypto"], extra_compile_args=["-O2", "-std=c99"]
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
