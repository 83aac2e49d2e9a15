/* GF(2^255 - 19) eight lanes at a time with AVX-512 IFMA (vpmadd52luq / vpmadd52huq),
 * when the CPU has it: the field code of the hash-to-curve map, the point checks and the
 * witnesses in psi_ifma.h, and the batch z^((p-5)/8) (tests). Results are identical to
 * the scalar code of fe25519.h (tests compare the two on every function).
 *
 * Representation: radix 2^51, five limbs per lane, *loose*: every limb < 2^52 between
 * operations (vpmadd52 reads 52 bits of each input, so a product of two such limbs is
 * exact), the value any residue of its class (canonical only through fe8_canon). The
 * 52-bit multiplier on 51-bit limbs leaves one bit of headroom, which makes the
 * reduction carry-parallel: a product's ten columns (low halves at 2^(51k), high halves
 * doubled at 2^(51(k+1))) fold with 2^255 = 19 into five limbs < 2^61, and one carry
 * step of all limbs at once brings them back below 2^52 (fe8_carry). Two independent
 * exponentiations interleave (fe8_pow22523_2), which keeps the multipliers busy.
 */
#ifndef FE25519_IFMA_H
#define FE25519_IFMA_H
#include "fe25519.h"

static int simd_enabled = 1; /* psi.native turns it off for tests of the scalar path */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define IFMA __attribute__((target("avx512f,avx512ifma")))
#define IFMA_INLINE IFMA static inline __attribute__((always_inline))
typedef struct { __m512i l[5]; } fe8;

static fe8 *fe8_alloc(size_t n) /* 64-byte aligned, free() it */
{
    void *p = NULL;
    return posix_memalign(&p, 64, sizeof(fe8) * (n ? n : 1)) ? NULL : p;
}

IFMA_INLINE __m512i fe8_x19(__m512i x) { /* 19 x = 16 x + 2 x + x */
    return _mm512_add_epi64(_mm512_add_epi64(_mm512_slli_epi64(x, 4), _mm512_slli_epi64(x, 1)), x);
}

/* limbs < 2^63 -> the same value with limbs < 2^51 + 19 * 2^12 (< 2^52), in one step */
IFMA_INLINE void fe8_carry(fe8 *o, const __m512i *r)
{
    const __m512i m = _mm512_set1_epi64((1LL << 51) - 1);
    __m512i t[5];
    for (int k = 0; k < 5; k++) t[k] = _mm512_srli_epi64(r[k], 51);
    o->l[0] = _mm512_add_epi64(_mm512_and_si512(r[0], m), fe8_x19(t[4]));
    for (int k = 1; k < 5; k++) o->l[k] = _mm512_add_epi64(_mm512_and_si512(r[k], m), t[k - 1]);
}

/* columns c_k = L_k + 2 H_(k-1), k = 0..9 (each < 2^56), folded and carried */
IFMA_INLINE void fe8_fold(fe8 *o, const __m512i *L, const __m512i *H)
{
    __m512i c[10], r[5];
    c[0] = L[0];
    for (int k = 1; k < 9; k++) c[k] = _mm512_add_epi64(L[k], _mm512_slli_epi64(H[k - 1], 1));
    c[9] = _mm512_slli_epi64(H[8], 1);
    for (int k = 0; k < 5; k++) r[k] = _mm512_add_epi64(c[k], fe8_x19(c[k + 5]));
    fe8_carry(o, r);
}

IFMA_INLINE void fe8_mul(fe8 *o, const fe8 *a, const fe8 *b)
{
    __m512i L[9], H[9];
    for (int k = 0; k < 9; k++) L[k] = H[k] = _mm512_setzero_si512();
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            L[i + j] = _mm512_madd52lo_epu64(L[i + j], a->l[i], b->l[j]);
            H[i + j] = _mm512_madd52hi_epu64(H[i + j], a->l[i], b->l[j]);
        }
    fe8_fold(o, L, H);
}

/* column k of a^2 = D_k + 2 (U_k + 2 X_(k-1)): D the squares' low halves, U the cross
 * products' low halves with the squares' high halves, X the cross products' high halves */
IFMA_INLINE void fe8_sq(fe8 *o, const fe8 *a)
{
    __m512i D[9], U[10], X[9], r[5], c[10];
    for (int k = 0; k < 9; k++) D[k] = U[k] = X[k] = _mm512_setzero_si512();
    U[9] = _mm512_setzero_si512();
    for (int i = 0; i < 5; i++) {
        D[2 * i] = _mm512_madd52lo_epu64(D[2 * i], a->l[i], a->l[i]);
        U[2 * i + 1] = _mm512_madd52hi_epu64(U[2 * i + 1], a->l[i], a->l[i]);
        for (int j = i + 1; j < 5; j++) {
            U[i + j] = _mm512_madd52lo_epu64(U[i + j], a->l[i], a->l[j]);
            X[i + j] = _mm512_madd52hi_epu64(X[i + j], a->l[i], a->l[j]);
        }
    }
    c[0] = D[0];
    for (int k = 1; k < 10; k++) {
        c[k] = _mm512_slli_epi64(_mm512_add_epi64(U[k], _mm512_slli_epi64(X[k - 1], 1)), 1);
        if (k < 9) c[k] = _mm512_add_epi64(c[k], D[k]);
    }
    for (int k = 0; k < 5; k++) r[k] = _mm512_add_epi64(c[k], fe8_x19(c[k + 5]));
    fe8_carry(o, r);
}

IFMA_INLINE void fe8_add(fe8 *o, const fe8 *a, const fe8 *b)
{
    __m512i r[5];
    for (int k = 0; k < 5; k++) r[k] = _mm512_add_epi64(a->l[k], b->l[k]);
    fe8_carry(o, r);
}

IFMA_INLINE void fe8_sub(fe8 *o, const fe8 *a, const fe8 *b) /* a + 4p - b */
{
    __m512i r[5];
    r[0] = _mm512_sub_epi64(_mm512_add_epi64(a->l[0], _mm512_set1_epi64((1LL << 53) - 76)),
                            b->l[0]);
    for (int k = 1; k < 5; k++)
        r[k] = _mm512_sub_epi64(_mm512_add_epi64(a->l[k], _mm512_set1_epi64((1LL << 53) - 4)),
                                b->l[k]);
    fe8_carry(o, r);
}

IFMA_INLINE void fe8_neg(fe8 *o, const fe8 *a)
{
    fe8 z;
    for (int k = 0; k < 5; k++) z.l[k] = _mm512_setzero_si512();
    fe8_sub(o, &z, a);
}

IFMA_INLINE void fe8_mul_small(fe8 *o, const fe8 *a, uint64_t s) /* s < 2^52 */
{
    const __m512i k = _mm512_set1_epi64((long long)s);
    __m512i L[9], H[9];
    for (int i = 0; i < 9; i++) L[i] = H[i] = _mm512_setzero_si512();
    for (int i = 0; i < 5; i++) {
        L[i] = _mm512_madd52lo_epu64(L[i], a->l[i], k);
        H[i] = _mm512_madd52hi_epu64(H[i], a->l[i], k);
    }
    fe8_fold(o, L, H);
}

IFMA_INLINE void fe8_set1(fe8 *o, const fe *c) /* c (limbs < 2^52) in every lane */
{
    for (int k = 0; k < 5; k++) o->l[k] = _mm512_set1_epi64((long long)c->v[k]);
}

IFMA_INLINE void fe8_select(fe8 *o, __mmask8 m, const fe8 *a, const fe8 *b) /* m ? a : b */
{
    for (int k = 0; k < 5; k++) o->l[k] = _mm512_mask_blend_epi64(m, b->l[k], a->l[k]);
}

/* the canonical limbs (value < p, limbs < 2^51): fe_tobytes' steps, lane-wise */
IFMA static void fe8_canon(fe8 *o, const fe8 *a)
{
    const __m512i m = _mm512_set1_epi64((1LL << 51) - 1);
    __m512i t[5];
    for (int k = 0; k < 5; k++) t[k] = a->l[k];
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 2) t[0] = _mm512_add_epi64(t[0], _mm512_set1_epi64(19));
        for (int k = 0; k < 4; k++) {
            t[k + 1] = _mm512_add_epi64(t[k + 1], _mm512_srli_epi64(t[k], 51));
            t[k] = _mm512_and_si512(t[k], m);
        }
        t[0] = _mm512_add_epi64(t[0], fe8_x19(_mm512_srli_epi64(t[4], 51)));
        t[4] = _mm512_and_si512(t[4], m);
    }
    t[0] = _mm512_add_epi64(t[0], _mm512_set1_epi64((1LL << 51) - 19));
    for (int k = 1; k < 5; k++) t[k] = _mm512_add_epi64(t[k], m);
    for (int k = 0; k < 4; k++) {
        t[k + 1] = _mm512_add_epi64(t[k + 1], _mm512_srli_epi64(t[k], 51));
        t[k] = _mm512_and_si512(t[k], m);
    }
    t[4] = _mm512_and_si512(t[4], m);
    for (int k = 0; k < 5; k++) o->l[k] = t[k];
}

IFMA static __mmask8 fe8_iszero(const fe8 *a)
{
    fe8 c;
    fe8_canon(&c, a);
    __m512i x = _mm512_or_si512(_mm512_or_si512(c.l[0], c.l[1]),
                                _mm512_or_si512(_mm512_or_si512(c.l[2], c.l[3]), c.l[4]));
    return _mm512_cmpeq_epi64_mask(x, _mm512_setzero_si512());
}

IFMA static __mmask8 fe8_eq(const fe8 *a, const fe8 *b)
{
    fe8 d;
    fe8_sub(&d, a, b);
    return fe8_iszero(&d);
}

IFMA static __mmask8 fe8_isodd(const fe8 *a)
{
    fe8 c;
    fe8_canon(&c, a);
    return _mm512_test_epi64_mask(c.l[0], _mm512_set1_epi64(1));
}

/* eight 32-byte little-endian encodings (bit 255 ignored) <-> one fe8 */
IFMA static void fe8_frombytes(fe8 *o, const uint8_t *const s[8])
{
    uint64_t l[5][8];
    for (int j = 0; j < 8; j++) {
        fe f;
        fe_frombytes(&f, s[j]);
        for (int k = 0; k < 5; k++) l[k][j] = f.v[k];
    }
    for (int k = 0; k < 5; k++) o->l[k] = _mm512_loadu_si512(l[k]);
}

IFMA static void fe8_tobytes(uint8_t *const s[8], int lanes, const fe8 *a)
{
    fe8 c;
    uint64_t l[5][8];
    fe8_canon(&c, a);
    for (int k = 0; k < 5; k++) _mm512_storeu_si512(l[k], c.l[k]);
    for (int j = 0; j < lanes; j++) {
        uint64_t w[4] = {l[0][j] | (l[1][j] << 51), (l[1][j] >> 13) | (l[2][j] << 38),
                         (l[2][j] >> 26) | (l[3][j] << 25), (l[3][j] >> 39) | (l[4][j] << 12)};
        memcpy(s[j], w, 32);
    }
}

IFMA static void fe8_load(fe8 *o, const fe *in) /* eight scalar elements (limbs < 2^52) */
{
    uint64_t l[5][8];
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < 5; k++) l[k][j] = in[j].v[k];
    for (int k = 0; k < 5; k++) o->l[k] = _mm512_loadu_si512(l[k]);
}

IFMA static void fe8_store(fe *out, const fe8 *a)
{
    uint64_t l[5][8];
    for (int k = 0; k < 5; k++) _mm512_storeu_si512(l[k], a->l[k]);
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < 5; k++) out[j].v[k] = l[k][j];
}

/* n (1 or 2) independent chains, interleaved: z[q] -> z[q]^(2^250 - 1), z11[q] = z[q]^11
 * (fe_pow250's chain) */
#define FE8_EACH for (int q = 0; q < n; q++)
#define FE8_SQN(o, x, c) do { FE8_EACH fe8_sq(&o[q], &x[q]); \
                              for (int r_ = 1; r_ < (c); r_++) FE8_EACH fe8_sq(&o[q], &o[q]); } while (0)
IFMA static void fe8_pow250_n(fe8 *z, fe8 *z11, int n)
{
    fe8 z2[2], t[2], z9[2], a[2], b[2], c[2];
    FE8_EACH fe8_sq(&z2[q], &z[q]);
    FE8_SQN(t, z2, 2);
    FE8_EACH fe8_mul(&z9[q], &t[q], &z[q]);
    FE8_EACH fe8_mul(&z11[q], &z9[q], &z2[q]);
    FE8_EACH fe8_sq(&t[q], &z11[q]);
    FE8_EACH fe8_mul(&a[q], &t[q], &z9[q]);                   /* 2^5 - 1 */
    FE8_SQN(t, a, 5); FE8_EACH fe8_mul(&b[q], &t[q], &a[q]);   /* 2^10 - 1 */
    FE8_SQN(t, b, 10); FE8_EACH fe8_mul(&c[q], &t[q], &b[q]);  /* 2^20 - 1 */
    FE8_SQN(t, c, 20); FE8_EACH fe8_mul(&t[q], &t[q], &c[q]);  /* 2^40 - 1 */
    FE8_SQN(t, t, 10); FE8_EACH fe8_mul(&a[q], &t[q], &b[q]);  /* 2^50 - 1 */
    FE8_SQN(t, a, 50); FE8_EACH fe8_mul(&b[q], &t[q], &a[q]);  /* 2^100 - 1 */
    FE8_SQN(t, b, 100); FE8_EACH fe8_mul(&t[q], &t[q], &b[q]); /* 2^200 - 1 */
    FE8_SQN(t, t, 50); FE8_EACH fe8_mul(&z[q], &t[q], &a[q]);  /* 2^250 - 1 */
}

/* z[q] -> z[q]^((p-5)/8) = z^(2^252 - 3) for q < n (n = 1 or 2) */
IFMA static void fe8_pow22523_n(fe8 *z, int n)
{
    fe8 x[2], z11[2];
    FE8_EACH x[q] = z[q];
    fe8_pow250_n(x, z11, n);
    FE8_SQN(x, x, 2);
    FE8_EACH fe8_mul(&z[q], &x[q], &z[q]);
}

IFMA static void fe8_invert(fe8 *o, const fe8 *z) /* z^(p-2) */
{
    fe8 x = *z, z11;
    fe8_pow250_n(&x, &z11, 1);
    for (int r = 0; r < 5; r++) fe8_sq(&x, &x);
    fe8_mul(o, &x, &z11);
}
#undef FE8_EACH
#undef FE8_SQN

/* Montgomery's trick lane-wise over g groups: den[i] -> 1/den[i] (all non-zero), three
 * multiplications per group and one inversion per call; acc: g scratch elements */
IFMA static void fe8_batch_invert(fe8 *den, fe8 *acc, size_t g)
{
    fe8 run, inv, t;
    fe one;
    fe_set(&one, 1);
    fe8_set1(&run, &one);
    for (size_t i = 0; i < g; i++) { acc[i] = run; fe8_mul(&run, &run, &den[i]); }
    fe8_invert(&inv, &run);
    for (size_t i = g; i-- > 0;) {
        fe8_mul(&t, &inv, &acc[i]);
        fe8_mul(&inv, &inv, &den[i]);
        den[i] = t;
    }
}

IFMA static void pow22523_ifma(fe *out, const fe *in, size_t n)
{
    size_t g = 0;
    for (; g + 16 <= n; g += 16) {
        fe8 a[2];
        fe8_load(&a[0], in + g);
        fe8_load(&a[1], in + g + 8);
        fe8_pow22523_n(a, 2);
        fe8_store(out + g, &a[0]);
        fe8_store(out + g + 8, &a[1]);
    }
    for (; g + 8 <= n; g += 8) {
        fe8 a;
        fe8_load(&a, in + g);
        fe8_pow22523_n(&a, 1);
        fe8_store(out + g, &a);
    }
    for (; g < n; g++) fe_pow22523(&out[g], &in[g]);
}

static int have_ifma(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512ifma") && __builtin_cpu_supports("avx512bw");
    }
    return cached;
}
#else
static int have_ifma(void) { return 0; }
#endif

static inline int use_ifma(void) { return simd_enabled && have_ifma(); }

/* out[i] = in[i]^((p-5)/8) for i < n (out may alias in) */
static void pow22523_batch(fe *out, const fe *in, size_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_ifma()) {
        pow22523_ifma(out, in, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) fe_pow22523(&out[i], &in[i]);
}
#endif
