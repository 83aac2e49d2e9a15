/* SHA-512 (FIPS 180-4) eight independent messages of one length per call (AVX-512F),
 * for RFC 9380 expand_message_xmd in _psi_native.c; results are identical to the scalar
 * sha512_* of fe25519.h (tests hash runs of equal-length messages of one to four
 * blocks both ways). */
#ifndef SHA512_X8_H
#define SHA512_X8_H
#include "fe25519_ifma.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define X8_ROR(x, n) _mm512_ror_epi64((x), (n))
#define X8_MAX 512 /* bytes of a padded message per lane */
#define SHA8 __attribute__((target("avx512f,avx512bw,avx512ifma")))

/* one block per lane, lane j's at blk + j * X8_MAX: the sixteen big-endian words
 * gathered across the lanes and byte-swapped */
SHA8 static void sha512x8_block(__m512i *st, const uint8_t *blk)
{
    __m512i w[16], a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5],
            g = st[6], h = st[7];
    const __m512i lanes = _mm512_set_epi64(7 * X8_MAX, 6 * X8_MAX, 5 * X8_MAX, 4 * X8_MAX,
                                           3 * X8_MAX, 2 * X8_MAX, X8_MAX, 0);
    const __m512i swap = _mm512_set4_epi32(0x08090a0b, 0x0c0d0e0f, 0x00010203, 0x04050607);
    for (int i = 0; i < 16; i++)
        w[i] = _mm512_shuffle_epi8(_mm512_i64gather_epi64(lanes, blk + 8 * i, 1), swap);
    for (int i = 0; i < 80; i++) {
        __m512i wi;
        if (i < 16) {
            wi = w[i];
        } else {
            __m512i w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
            __m512i s0 = _mm512_xor_si512(_mm512_xor_si512(X8_ROR(w15, 1), X8_ROR(w15, 8)),
                                          _mm512_srli_epi64(w15, 7));
            __m512i s1 = _mm512_xor_si512(_mm512_xor_si512(X8_ROR(w2, 19), X8_ROR(w2, 61)),
                                          _mm512_srli_epi64(w2, 6));
            wi = _mm512_add_epi64(_mm512_add_epi64(w[i & 15], s0),
                                  _mm512_add_epi64(w[(i - 7) & 15], s1));
            w[i & 15] = wi;
        }
        __m512i S1 = _mm512_xor_si512(_mm512_xor_si512(X8_ROR(e, 14), X8_ROR(e, 18)),
                                      X8_ROR(e, 41));
        __m512i ch = _mm512_ternarylogic_epi64(e, f, g, 0xCA);  /* e ? f : g */
        __m512i t1 = _mm512_add_epi64(_mm512_add_epi64(h, S1),
                                      _mm512_add_epi64(ch, _mm512_add_epi64(
                                          _mm512_set1_epi64((long long)K512[i]), wi)));
        __m512i S0 = _mm512_xor_si512(_mm512_xor_si512(X8_ROR(a, 28), X8_ROR(a, 34)),
                                      X8_ROR(a, 39));
        __m512i mj = _mm512_ternarylogic_epi64(a, b, c, 0xE8); /* majority */
        h = g; g = f; f = e; e = _mm512_add_epi64(d, t1);
        d = c; c = b; b = a; a = _mm512_add_epi64(t1, _mm512_add_epi64(S0, mj));
    }
    st[0] = _mm512_add_epi64(st[0], a); st[1] = _mm512_add_epi64(st[1], b);
    st[2] = _mm512_add_epi64(st[2], c); st[3] = _mm512_add_epi64(st[3], d);
    st[4] = _mm512_add_epi64(st[4], e); st[5] = _mm512_add_epi64(st[5], f);
    st[6] = _mm512_add_epi64(st[6], g); st[7] = _mm512_add_epi64(st[7], h);
}

/* SHA-512 of prefix || m[j] for 8 lanes, each m[j] of length len; the state after the
 * prefix (prefix_len bytes, a multiple of 128) is iv. Returns 0 if len is too long. */
SHA8 static int sha512x8(uint8_t out[8][64], const uint64_t *iv, uint64_t prefix_len,
                         const uint8_t *const m[8], size_t len)
{
    size_t nb = (len + 17 + 127) / 128;
    if (nb * 128 > X8_MAX) return 0;
    uint8_t buf[8][X8_MAX];
    uint64_t bits = (prefix_len + len) * 8;
    for (int j = 0; j < 8; j++) {
        memcpy(buf[j], m[j], len);
        memset(buf[j] + len, 0, nb * 128 - len);
        buf[j][len] = 0x80;
        for (int k = 0; k < 8; k++) buf[j][nb * 128 - 1 - k] = (uint8_t)(bits >> (8 * k));
    }
    __m512i st[8];
    for (int k = 0; k < 8; k++) st[k] = _mm512_set1_epi64((long long)iv[k]);
    for (size_t q = 0; q < nb; q++) sha512x8_block(st, buf[0] + 128 * q);
    uint64_t h[8][8];
    for (int k = 0; k < 8; k++) _mm512_storeu_si512(h[k], st[k]);
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < 8; k++) {
            uint64_t v = __builtin_bswap64(h[k][j]);
            memcpy(out[j] + 8 * k, &v, 8);
        }
    return 1;
}

/* expand_xmd96 (RFC 9380 5.3.1, 96 bytes) of 8 messages of equal length; pre has
 * absorbed Z_pad. Returns 0 (nothing written) where the lengths do not fit. */
SHA8 static int expand_xmd96_x8_ifma(uint8_t b1[8][64], uint8_t b2[8][64],
                                     const sha512_ctx *pre, const uint8_t *const msg[8],
                                     size_t ml, const uint8_t *dp, size_t dl)
{
    static const uint8_t post0[3] = {0, 96, 0};
    static const uint64_t iv[8] = {
        0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
        0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
        0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
    size_t l0 = ml + 3 + dl, l1 = 65 + dl;
    if (l0 + 17 > X8_MAX || l1 + 17 > X8_MAX) return 0;
    uint8_t in[8][X8_MAX], b0[8][64];
    const uint8_t *p[8];
    for (int j = 0; j < 8; j++) {
        memcpy(in[j], msg[j], ml);
        memcpy(in[j] + ml, post0, 3);
        memcpy(in[j] + ml + 3, dp, dl);
        p[j] = in[j];
    }
    if (!sha512x8(b0, pre->h, 128, p, l0)) return 0;
    for (int j = 0; j < 8; j++) {
        memcpy(in[j], b0[j], 64);
        in[j][64] = 1;
        memcpy(in[j] + 65, dp, dl);
    }
    sha512x8(b1, iv, 0, p, l1);
    for (int j = 0; j < 8; j++) {
        for (int k = 0; k < 64; k++) in[j][k] = b0[j][k] ^ b1[j][k];
        in[j][64] = 2;
    }
    sha512x8(b2, iv, 0, p, l1);
    return 1;
}

#endif

/* 8 lanes of expand_message_xmd where the CPU and the lengths allow it, else 0 */
static int expand_xmd96_x8(uint8_t b1[8][64], uint8_t b2[8][64], const sha512_ctx *pre,
                           const uint8_t *const msg[8], size_t ml, const uint8_t *dp,
                           size_t dl)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (simd_enabled && have_ifma()) return expand_xmd96_x8_ifma(b1, b2, pre, msg, ml, dp, dl);
#endif
    (void)b1; (void)b2; (void)pre; (void)msg; (void)ml; (void)dp; (void)dl;
    return 0;
}

#endif
