/* GF(2^255 - 19) in radix 2^51 (five 64-bit limbs, 128-bit products: the layout of
 * curve25519-donna-c64 / ref10's exponent chains) and SHA-512 (FIPS 180-4), for
 * _psi_native.c. Checked against Python integers and hashlib in tests/psi. */
#ifndef FE25519_H
#define FE25519_H
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;
typedef struct { uint64_t v[5]; } fe;
#define M51 ((1ULL << 51) - 1)

static uint64_t ld64(const uint8_t *s) { uint64_t x; memcpy(&x, s, 8); return x; }

static void fe_frombytes(fe *h, const uint8_t *s) /* ignores bit 255 */
{
    uint64_t w0 = ld64(s), w1 = ld64(s + 8), w2 = ld64(s + 16), w3 = ld64(s + 24);
    h->v[0] = w0 & M51;
    h->v[1] = ((w0 >> 51) | (w1 << 13)) & M51;
    h->v[2] = ((w1 >> 38) | (w2 << 26)) & M51;
    h->v[3] = ((w2 >> 25) | (w3 << 39)) & M51;
    h->v[4] = (w3 >> 12) & M51;
}

static void fe_iter(uint64_t *t)
{
    t[1] += t[0] >> 51; t[0] &= M51;
    t[2] += t[1] >> 51; t[1] &= M51;
    t[3] += t[2] >> 51; t[2] &= M51;
    t[4] += t[3] >> 51; t[3] &= M51;
    t[0] += 19 * (t[4] >> 51); t[4] &= M51;
}

static void fe_tobytes(uint8_t *s, const fe *f) /* canonical (fully reduced) */
{
    uint64_t t[5];
    memcpy(t, f->v, sizeof t);
    fe_iter(t); fe_iter(t);
    t[0] += 19;
    fe_iter(t);
    t[0] += (1ULL << 51) - 19;
    t[1] += (1ULL << 51) - 1; t[2] += (1ULL << 51) - 1;
    t[3] += (1ULL << 51) - 1; t[4] += (1ULL << 51) - 1;
    t[1] += t[0] >> 51; t[0] &= M51;
    t[2] += t[1] >> 51; t[1] &= M51;
    t[3] += t[2] >> 51; t[2] &= M51;
    t[4] += t[3] >> 51; t[3] &= M51;
    t[4] &= M51;
    uint64_t w[4] = {t[0] | (t[1] << 51), (t[1] >> 13) | (t[2] << 38),
                     (t[2] >> 26) | (t[3] << 25), (t[3] >> 39) | (t[4] << 12)};
    memcpy(s, w, 32);
}

static void fe_carry(fe *h) { fe_iter(h->v); }

static void fe_add(fe *o, const fe *a, const fe *b)
{
    for (int i = 0; i < 5; i++) o->v[i] = a->v[i] + b->v[i];
    fe_carry(o);
}

static void fe_sub(fe *o, const fe *a, const fe *b) /* a + 4p - b */
{
    o->v[0] = a->v[0] + 0x1FFFFFFFFFFFB4ULL - b->v[0];
    for (int i = 1; i < 5; i++) o->v[i] = a->v[i] + 0x1FFFFFFFFFFFFCULL - b->v[i];
    fe_carry(o);
}

static void fe_neg(fe *o, const fe *a) { fe z = {{0}}; fe_sub(o, &z, a); }

static void fe_mul(fe *o, const fe *a, const fe *b)
{
    uint64_t r0 = a->v[0], r1 = a->v[1], r2 = a->v[2], r3 = a->v[3], r4 = a->v[4];
    uint64_t s0 = b->v[0], s1 = b->v[1], s2 = b->v[2], s3 = b->v[3], s4 = b->v[4];
    u128 t0 = (u128)r0 * s0;
    u128 t1 = (u128)r0 * s1 + (u128)r1 * s0;
    u128 t2 = (u128)r0 * s2 + (u128)r2 * s0 + (u128)r1 * s1;
    u128 t3 = (u128)r0 * s3 + (u128)r3 * s0 + (u128)r1 * s2 + (u128)r2 * s1;
    u128 t4 = (u128)r0 * s4 + (u128)r4 * s0 + (u128)r3 * s1 + (u128)r1 * s3 + (u128)r2 * s2;
    r1 *= 19; r2 *= 19; r3 *= 19; r4 *= 19;
    t0 += (u128)r4 * s1 + (u128)r1 * s4 + (u128)r2 * s3 + (u128)r3 * s2;
    t1 += (u128)r4 * s2 + (u128)r2 * s4 + (u128)r3 * s3;
    t2 += (u128)r4 * s3 + (u128)r3 * s4;
    t3 += (u128)r4 * s4;
    uint64_t c;
    r0 = (uint64_t)t0 & M51; c = (uint64_t)(t0 >> 51);
    t1 += c; r1 = (uint64_t)t1 & M51; c = (uint64_t)(t1 >> 51);
    t2 += c; r2 = (uint64_t)t2 & M51; c = (uint64_t)(t2 >> 51);
    t3 += c; r3 = (uint64_t)t3 & M51; c = (uint64_t)(t3 >> 51);
    t4 += c; r4 = (uint64_t)t4 & M51; c = (uint64_t)(t4 >> 51);
    r0 += c * 19; c = r0 >> 51; r0 &= M51; r1 += c;
    o->v[0] = r0; o->v[1] = r1; o->v[2] = r2; o->v[3] = r3; o->v[4] = r4;
}

static void fe_sq(fe *o, const fe *a)
{
    uint64_t r0 = a->v[0], r1 = a->v[1], r2 = a->v[2], r3 = a->v[3], r4 = a->v[4];
    uint64_t d0 = 2 * r0, d1 = 2 * r1, d2 = 2 * r2 * 19, d419 = r4 * 19, d4 = 2 * d419;
    u128 t0 = (u128)r0 * r0 + (u128)d4 * r1 + (u128)d2 * r3;
    u128 t1 = (u128)d0 * r1 + (u128)d4 * r2 + (u128)r3 * (r3 * 19);
    u128 t2 = (u128)d0 * r2 + (u128)r1 * r1 + (u128)d4 * r3;
    u128 t3 = (u128)d0 * r3 + (u128)d1 * r2 + (u128)r4 * d419;
    u128 t4 = (u128)d0 * r4 + (u128)d1 * r3 + (u128)r2 * r2;
    uint64_t c;
    r0 = (uint64_t)t0 & M51; c = (uint64_t)(t0 >> 51);
    t1 += c; r1 = (uint64_t)t1 & M51; c = (uint64_t)(t1 >> 51);
    t2 += c; r2 = (uint64_t)t2 & M51; c = (uint64_t)(t2 >> 51);
    t3 += c; r3 = (uint64_t)t3 & M51; c = (uint64_t)(t3 >> 51);
    t4 += c; r4 = (uint64_t)t4 & M51; c = (uint64_t)(t4 >> 51);
    r0 += c * 19; c = r0 >> 51; r0 &= M51; r1 += c;
    o->v[0] = r0; o->v[1] = r1; o->v[2] = r2; o->v[3] = r3; o->v[4] = r4;
}

static void fe_sqn(fe *o, const fe *a, int n) { fe_sq(o, a); while (--n > 0) fe_sq(o, o); }

static void fe_mul_small(fe *o, const fe *a, uint64_t k)
{
    u128 c = 0;
    for (int i = 0; i < 5; i++) {
        c += (u128)a->v[i] * k;
        o->v[i] = (uint64_t)c & M51;
        c >>= 51;
    }
    o->v[0] += (uint64_t)c * 19;
    fe_carry(o);
}

static void fe_set(fe *o, uint64_t x) { memset(o, 0, sizeof *o); o->v[0] = x; fe_carry(o); }

/* z^(2^250 - 1) and z^11 (shared prefix of the two exponent chains, ref10's). */
static void fe_pow250(fe *z250, fe *z11, const fe *z)
{
    fe z2, t, z9, a, b, c;
    fe_sq(&z2, z);
    fe_sqn(&t, &z2, 2);
    fe_mul(&z9, &t, z);
    fe_mul(z11, &z9, &z2);
    fe_sq(&t, z11);
    fe_mul(&a, &t, &z9);              /* 2^5 - 1 */
    fe_sqn(&t, &a, 5); fe_mul(&b, &t, &a);      /* 2^10 - 1 */
    fe_sqn(&t, &b, 10); fe_mul(&c, &t, &b);     /* 2^20 - 1 */
    fe_sqn(&t, &c, 20); fe_mul(&t, &t, &c);     /* 2^40 - 1 */
    fe_sqn(&t, &t, 10); fe_mul(&a, &t, &b);     /* 2^50 - 1 */
    fe_sqn(&t, &a, 50); fe_mul(&b, &t, &a);     /* 2^100 - 1 */
    fe_sqn(&t, &b, 100); fe_mul(&t, &t, &b);    /* 2^200 - 1 */
    fe_sqn(&t, &t, 50); fe_mul(z250, &t, &a);   /* 2^250 - 1 */
}

static void fe_pow22523(fe *o, const fe *z) /* z^((p-5)/8) = z^(2^252 - 3) */
{
    fe t, z11;
    fe_pow250(&t, &z11, z);
    fe_sqn(&t, &t, 2);
    fe_mul(o, &t, z);
}

static void fe_invert(fe *o, const fe *z) /* z^(p-2) */
{
    fe t, z11;
    fe_pow250(&t, &z11, z);
    fe_sqn(&t, &t, 5);
    fe_mul(o, &t, &z11);
}

static int fe_eq(const fe *a, const fe *b)
{
    uint8_t x[32], y[32];
    fe_tobytes(x, a); fe_tobytes(y, b);
    return memcmp(x, y, 32) == 0;
}

static int fe_iszero(const fe *a) { fe z = {{0}}; return fe_eq(a, &z); }

static int fe_isodd(const fe *a) { uint8_t x[32]; fe_tobytes(x, a); return x[0] & 1; }

/* Legendre symbol as 1 (non-zero square), 0 (zero), -1: (z^((p-5)/8))^2 z)^2 = z^((p-1)/2) */
static int fe_legendre(const fe *z)
{
    fe b, one;
    fe_pow22523(&b, z);
    fe_sq(&b, &b); fe_mul(&b, &b, z); fe_sq(&b, &b);
    fe_set(&one, 1);
    if (fe_eq(&b, &one)) return 1;
    return fe_iszero(z) ? 0 : -1;
}

/* --- SHA-512 (FIPS 180-4) ------------------------------------------------------------ */

typedef struct { uint64_t h[8]; uint8_t buf[128]; size_t n; uint64_t total; } sha512_ctx;

static const uint64_t K512[80] = {
    0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL, 0xe9b5dba58189dbbcULL,
    0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL, 0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL,
    0xd807aa98a3030242ULL, 0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
    0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL, 0xc19bf174cf692694ULL,
    0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL, 0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL,
    0x2de92c6f592b0275ULL, 0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
    0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL, 0xbf597fc7beef0ee4ULL,
    0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL, 0x06ca6351e003826fULL, 0x142929670a0e6e70ULL,
    0x27b70a8546d22ffcULL, 0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
    0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL, 0x92722c851482353bULL,
    0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL, 0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL,
    0xd192e819d6ef5218ULL, 0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
    0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL, 0x34b0bcb5e19b48a8ULL,
    0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL, 0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL,
    0x748f82ee5defb2fcULL, 0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
    0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL, 0xc67178f2e372532bULL,
    0xca273eceea26619cULL, 0xd186b8c721c0c207ULL, 0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL,
    0x06f067aa72176fbaULL, 0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
    0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL, 0x431d67c49c100d4cULL,
    0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL, 0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL};

#define ROR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))

static uint64_t be64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return __builtin_bswap64(x); }

#define S512_R(a, b, c, d, e, f, g, h, i)                                                  \
    do {                                                                                  \
        uint64_t t1 = h + (ROR(e, 14) ^ ROR(e, 18) ^ ROR(e, 41)) + ((e & f) ^ (~e & g)) +   \
                      K512[i] + w[i];                                                     \
        uint64_t t2 = (ROR(a, 28) ^ ROR(a, 34) ^ ROR(a, 39)) + ((a & b) ^ (a & c) ^ (b & c)); \
        d += t1;                                                                          \
        h = t1 + t2;                                                                      \
    } while (0)

static void sha512_block(uint64_t *st, const uint8_t *p)
{
    uint64_t w[80], a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5],
             g = st[6], h = st[7];
    for (int i = 0; i < 16; i++) w[i] = be64(p + 8 * i);
    for (int i = 16; i < 80; i++) {
        uint64_t s0 = ROR(w[i - 15], 1) ^ ROR(w[i - 15], 8) ^ (w[i - 15] >> 7);
        uint64_t s1 = ROR(w[i - 2], 19) ^ ROR(w[i - 2], 61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (int i = 0; i < 80; i += 8) { /* eight rounds with the variables rotated in place */
        S512_R(a, b, c, d, e, f, g, h, i);
        S512_R(h, a, b, c, d, e, f, g, i + 1);
        S512_R(g, h, a, b, c, d, e, f, i + 2);
        S512_R(f, g, h, a, b, c, d, e, i + 3);
        S512_R(e, f, g, h, a, b, c, d, i + 4);
        S512_R(d, e, f, g, h, a, b, c, i + 5);
        S512_R(c, d, e, f, g, h, a, b, i + 6);
        S512_R(b, c, d, e, f, g, h, a, i + 7);
    }
    st[0] += a; st[1] += b; st[2] += c; st[3] += d; st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

static void sha512_init(sha512_ctx *c)
{
    static const uint64_t iv[8] = {
        0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
        0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
        0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
    memcpy(c->h, iv, sizeof iv);
    c->n = 0;
    c->total = 0;
}

static void sha512_update(sha512_ctx *c, const uint8_t *p, size_t len)
{
    c->total += len;
    if (c->n) {
        size_t take = 128 - c->n < len ? 128 - c->n : len;
        memcpy(c->buf + c->n, p, take);
        c->n += take; p += take; len -= take;
        if (c->n < 128) return;
        sha512_block(c->h, c->buf);
        c->n = 0;
    }
    for (; len >= 128; p += 128, len -= 128) sha512_block(c->h, p);
    memcpy(c->buf, p, len);
    c->n = len;
}

static void sha512_final(sha512_ctx *c, uint8_t *out)
{
    uint64_t bits = c->total * 8;
    c->buf[c->n++] = 0x80; /* c->n < 128: update flushes full blocks */
    if (c->n > 112) {
        memset(c->buf + c->n, 0, 128 - c->n);
        sha512_block(c->h, c->buf);
        c->n = 0;
    }
    memset(c->buf + c->n, 0, 120 - c->n);
    for (int i = 0; i < 8; i++) c->buf[127 - i] = (uint8_t)(bits >> (8 * i));
    sha512_block(c->h, c->buf);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) out[8 * i + j] = (uint8_t)(c->h[i] >> (56 - 8 * j));
}

#endif
