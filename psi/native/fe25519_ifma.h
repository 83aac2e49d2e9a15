/* Batch z^((p-5)/8) over GF(2^255 - 19), eight lanes at a time with AVX-512 IFMA
 * (vpmadd52luq / vpmadd52huq, radix 2^52, five limbs) when the CPU has it, else the
 * scalar fe_pow22523 of fe25519.h. It is the one exponentiation of every Elligator 2
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
