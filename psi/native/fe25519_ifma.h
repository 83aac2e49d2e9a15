/* Batch z^((p-5)/8) over GF(2^255 - 19), eight lanes at a time with AVX-512 IFMA
 * (vpmadd52luq / vpmadd52huq, radix 2^52, five limbs) when the CPU has it, else the
 * scalar fe_pow22523 of fe25519.h; and SHA-512 eight messages at a time (AVX-512F) for
 * expand_message_xmd. It is the one exponentiation of every Elligator 2
 * square root and every Legendre symbol, i.e. most of hash-to-curve and of the point
 * checks; results are identical to the scalar code (tests compare the two).
 *
 * Limbs stay strictly below 2^52 between operations (vpmadd52 reads 52 bits of each
 * input): products are normalised over ten limbs, folded with 2^260 = 608 (mod p),
 * then carried twice with the fold and once more from limb 0 (see fe8_reduce). */
#ifndef FE25519_IFMA_H
#define FE25519_IFMA_H
#include "fe25519.h"

static int simd_enabled = 1; /* psi.native turns it off for tests of the scalar path */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define IFMA __attribute__((target("avx512f,avx512ifma")))
typedef struct { __m512i l[5]; } fe8;

IFMA static inline void fe8_carry(__m512i *z)
{
    const __m512i m = _mm512_set1_epi64((1LL << 52) - 1), k608 = _mm512_set1_epi64(608);
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < 4; k++) {
            z[k + 1] = _mm512_add_epi64(z[k + 1], _mm512_srli_epi64(z[k], 52));
            z[k] = _mm512_and_si512(z[k], m);
        }
        __m512i c = _mm512_srli_epi64(z[4], 52);
        z[4] = _mm512_and_si512(z[4], m);
        z[0] = _mm512_madd52lo_epu64(z[0], c, k608);
    }
    z[1] = _mm512_add_epi64(z[1], _mm512_srli_epi64(z[0], 52));
    z[0] = _mm512_and_si512(z[0], m);
}

IFMA static inline void fe8_reduce(fe8 *o, __m512i *z) /* z[0..9] -> o */
{
    const __m512i m = _mm512_set1_epi64((1LL << 52) - 1), k608 = _mm512_set1_epi64(608);
    for (int k = 0; k < 9; k++) {
        z[k + 1] = _mm512_add_epi64(z[k + 1], _mm512_srli_epi64(z[k], 52));
        z[k] = _mm512_and_si512(z[k], m);
    }
    __m512i h = _mm512_madd52hi_epu64(_mm512_setzero_si512(), z[9], k608);
    for (int k = 0; k < 5; k++) {
        z[k] = _mm512_madd52lo_epu64(z[k], z[k + 5], k608);
        if (k < 4) z[k + 1] = _mm512_madd52hi_epu64(z[k + 1], z[k + 5], k608);
    }
    z[0] = _mm512_madd52lo_epu64(z[0], h, k608);
    fe8_carry(z);
    for (int k = 0; k < 5; k++) o->l[k] = z[k];
}

IFMA static void fe8_mul(fe8 *o, const fe8 *a, const fe8 *b)
{
    __m512i z[10];
    for (int k = 0; k < 10; k++) z[k] = _mm512_setzero_si512();
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            z[i + j] = _mm512_madd52lo_epu64(z[i + j], a->l[i], b->l[j]);
            z[i + j + 1] = _mm512_madd52hi_epu64(z[i + j + 1], a->l[i], b->l[j]);
        }
    fe8_reduce(o, z);
}

IFMA static void fe8_sq(fe8 *o, const fe8 *a)
{
    __m512i z[10], d[10];
    for (int k = 0; k < 10; k++) z[k] = d[k] = _mm512_setzero_si512();
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++) {
            z[i + j] = _mm512_madd52lo_epu64(z[i + j], a->l[i], a->l[j]);
            z[i + j + 1] = _mm512_madd52hi_epu64(z[i + j + 1], a->l[i], a->l[j]);
        }
    for (int i = 0; i < 5; i++) {
        d[2 * i] = _mm512_madd52lo_epu64(d[2 * i], a->l[i], a->l[i]);
        d[2 * i + 1] = _mm512_madd52hi_epu64(d[2 * i + 1], a->l[i], a->l[i]);
    }
    for (int k = 0; k < 10; k++) z[k] = _mm512_add_epi64(_mm512_slli_epi64(z[k], 1), d[k]);
    fe8_reduce(o, z);
}

IFMA static void fe8_sqn(fe8 *o, const fe8 *a, int n) { fe8_sq(o, a); while (--n > 0) fe8_sq(o, o); }

IFMA static void fe8_pow22523(fe8 *o, const fe8 *z) /* fe_pow250 + fe_pow22523, 8 lanes */
{
    fe8 z2, t, z9, z11, a, b, c;
    fe8_sq(&z2, z);
    fe8_sqn(&t, &z2, 2);
    fe8_mul(&z9, &t, z);
    fe8_mul(&z11, &z9, &z2);
    fe8_sq(&t, &z11);
    fe8_mul(&a, &t, &z9);
    fe8_sqn(&t, &a, 5); fe8_mul(&b, &t, &a);
    fe8_sqn(&t, &b, 10); fe8_mul(&c, &t, &b);
    fe8_sqn(&t, &c, 20); fe8_mul(&t, &t, &c);
    fe8_sqn(&t, &t, 10); fe8_mul(&a, &t, &b);
    fe8_sqn(&t, &a, 50); fe8_mul(&b, &t, &a);
    fe8_sqn(&t, &b, 100); fe8_mul(&t, &t, &b);
    fe8_sqn(&t, &t, 50); fe8_mul(&t, &t, &a);
    fe8_sqn(&t, &t, 2);
    fe8_mul(o, &t, z);
}

/* eight radix-2^51 elements <-> one fe8 (through the canonical 32-byte form) */
IFMA static void fe8_load(fe8 *o, const fe *in)
{
    uint64_t l[5][8];
    for (int j = 0; j < 8; j++) {
        uint8_t s[32];
        uint64_t w[4];
        fe_tobytes(s, &in[j]);
        memcpy(w, s, 32);
        l[0][j] = w[0] & ((1ULL << 52) - 1);
        l[1][j] = ((w[0] >> 52) | (w[1] << 12)) & ((1ULL << 52) - 1);
        l[2][j] = ((w[1] >> 40) | (w[2] << 24)) & ((1ULL << 52) - 1);
        l[3][j] = ((w[2] >> 28) | (w[3] << 36)) & ((1ULL << 52) - 1);
        l[4][j] = w[3] >> 16;
    }
    for (int k = 0; k < 5; k++) o->l[k] = _mm512_loadu_si512(l[k]);
}

IFMA static void fe8_store(fe *out, const fe8 *a)
{
    uint64_t l[5][8];
    for (int k = 0; k < 5; k++) _mm512_storeu_si512(l[k], a->l[k]);
    for (int j = 0; j < 8; j++) {
        out[j].v[0] = l[0][j] & M51;
        out[j].v[1] = ((l[0][j] >> 51) | (l[1][j] << 1)) & M51;
        out[j].v[2] = ((l[1][j] >> 50) | (l[2][j] << 2)) & M51;
        out[j].v[3] = ((l[2][j] >> 49) | (l[3][j] << 3)) & M51;
        out[j].v[4] = (l[3][j] >> 48) | (l[4][j] << 4); /* up to 56 bits: carried below */
        fe_carry(&out[j]);
        fe_carry(&out[j]);
    }
}

IFMA static void pow22523_ifma(fe *out, const fe *in, size_t n)
{
    size_t g = 0;
    for (; g + 8 <= n; g += 8) {
        fe8 a;
        fe8_load(&a, in + g);
        fe8_pow22523(&a, &a);
        fe8_store(out + g, &a);
    }
    for (; g < n; g++) fe_pow22523(&out[g], &in[g]);
}

/* --- SHA-512, eight independent messages of equal length per call (AVX-512F) --------- */

#define X8_ROR(x, n) _mm512_ror_epi64((x), (n))

IFMA static void sha512x8_block(__m512i *st, const uint8_t *const blk[8])
{
    __m512i w[16], a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5],
            g = st[6], h = st[7];
    for (int i = 0; i < 16; i++) {
        uint64_t t[8];
        for (int j = 0; j < 8; j++) t[j] = be64(blk[j] + 8 * i);
        w[i] = _mm512_loadu_si512(t);
    }
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

#define X8_MAX 512 /* bytes of a padded message per lane */

/* SHA-512 of prefix || m[j] for 8 lanes, each m[j] of length len; the state after the
 * prefix (prefix_len bytes, a multiple of 128) is iv. Returns 0 if len is too long. */
IFMA static int sha512x8(uint8_t out[8][64], const uint64_t *iv, uint64_t prefix_len,
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
    for (size_t q = 0; q < nb; q++) {
        const uint8_t *blk[8];
        for (int j = 0; j < 8; j++) blk[j] = buf[j] + 128 * q;
        sha512x8_block(st, blk);
    }
    uint64_t h[8][8];
    for (int k = 0; k < 8; k++) _mm512_storeu_si512(h[k], st[k]);
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 8; i++) out[j][8 * k + i] = (uint8_t)(h[k][j] >> (56 - 8 * i));
    return 1;
}

/* expand_xmd96 (RFC 9380 5.3.1, 96 bytes) of 8 messages of equal length; pre has
 * absorbed Z_pad. Returns 0 (nothing written) where the lengths do not fit. */
IFMA static int expand_xmd96_x8_ifma(uint8_t b1[8][64], uint8_t b2[8][64],
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

static int have_ifma(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512ifma") ? 1 : 0;
    }
    return cached;
}
#else
static int have_ifma(void) { return 0; }
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

/* out[i] = in[i]^((p-5)/8) for i < n (out may alias in) */
static void pow22523_batch(fe *out, const fe *in, size_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (simd_enabled && have_ifma()) {
        pow22523_ifma(out, in, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) fe_pow22523(&out[i], &in[i]);
}
#endif
