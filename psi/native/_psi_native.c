/* psi.native._psi_native: the PSI hot loops in C (GF(2^255 - 19) arithmetic in radix
 * 2^51, SHA-512, RFC 9380 curve25519 Elligator 2, x-only [8] and point checks) and a
 * driver that runs a batch through libcrypto_mb's mbx_x25519_mb8 (8 lanes per call).
 *
 * Every function mirrors a pure-Python function in psi/hash_to_curve.py or
 * psi/engine.py and returns byte-identical results (tests compare them). Nothing here
 * links against libcrypto_mb: the caller passes the address of mbx_x25519_mb8 that
 * ctypes resolved, so the extension builds with gcc and Python's headers alone.
 *
 * Field arithmetic is variable-time only where the Python code it replaces was (the
 * branches of the map depend on the public hash of an ID, the checks on received
 * points); secret scalars never enter this file except as an opaque pointer passed on
 * to the library.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

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

static uint64_t be64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = (x << 8) | p[i];
    return x;
}

static void sha512_block(uint64_t *h, const uint8_t *p)
{
    uint64_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6],
             k = h[7];
    for (int i = 0; i < 16; i++) w[i] = be64(p + 8 * i);
    for (int i = 16; i < 80; i++) {
        uint64_t s0 = ROR(w[i - 15], 1) ^ ROR(w[i - 15], 8) ^ (w[i - 15] >> 7);
        uint64_t s1 = ROR(w[i - 2], 19) ^ ROR(w[i - 2], 61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (int i = 0; i < 80; i++) {
        uint64_t t1 = k + (ROR(e, 14) ^ ROR(e, 18) ^ ROR(e, 41)) + ((e & f) ^ (~e & g)) +
                      K512[i] + w[i];
        uint64_t t2 = (ROR(a, 28) ^ ROR(a, 34) ^ ROR(a, 39)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
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
    uint8_t pad = 0x80, zero = 0, len[16] = {0};
    sha512_update(c, &pad, 1);
    while (c->n != 112) sha512_update(c, &zero, 1);
    for (int i = 0; i < 8; i++) len[15 - i] = (uint8_t)(bits >> (8 * i));
    sha512_update(c, len, 16);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) out[8 * i + j] = (uint8_t)(c->h[i] >> (56 - 8 * j));
}

/* --- RFC 9380 hash_to_field (L = 48) and Elligator 2 --------------------------------- */

/* a 48-byte big-endian integer mod p: N = A 2^256 + B = B + 38 A (mod p) */
static void fe_from_be48(fe *o, const uint8_t *s)
{
    uint8_t lo[32], hi[32] = {0};
    for (int i = 0; i < 32; i++) lo[i] = s[47 - i];
    for (int i = 0; i < 16; i++) hi[i] = s[15 - i];
    fe b, a, top;
    fe_frombytes(&b, lo);
    fe_set(&top, (uint64_t)(lo[31] >> 7) * 19); /* bit 255 of B: 2^255 = 19 */
    fe_add(&b, &b, &top);
    fe_frombytes(&a, hi);
    fe_mul_small(&a, &a, 38);
    fe_add(o, &b, &a);
}

static fe C_J, C_X1N, C_JX1N, C_C2, C_C3;

/* psi/hash_to_curve.py _ell2_curve25519, step for step: xn / xd and y with the RFC sign */
static void ell2(fe *xn, fe *xd, fe *y, const fe *u)
{
    fe tv1, tv2, gxd, gx1, tv3, t, arg, ngx1;
    fe_sq(&tv1, u); fe_add(&tv1, &tv1, &tv1);
    fe_set(&t, 1); fe_add(xd, &tv1, &t);
    fe_sq(&tv2, xd);
    fe_mul(&gxd, &tv2, xd);
    fe_mul(&gx1, &C_JX1N, &tv1); fe_add(&gx1, &gx1, &tv2); fe_mul(&gx1, &gx1, &C_X1N);
    fe_sq(&tv3, &gxd);
    fe_sq(&arg, &tv3); fe_mul(&arg, &arg, &tv3); fe_mul(&arg, &arg, &gxd);
    fe_mul(&arg, &arg, &gx1);
    fe_pow22523(y, &arg);
    fe_mul(y, y, &tv3); fe_mul(y, y, &gxd); fe_mul(y, y, &gx1);
    fe_sq(&t, y); fe_mul(&t, &t, &gxd);
    fe_neg(&ngx1, &gx1);
    if (fe_eq(&t, &gx1)) {
        *xn = C_X1N;
        if (!fe_isodd(y)) fe_neg(y, y);
    } else if (fe_eq(&t, &ngx1)) {
        *xn = C_X1N;
        fe_mul(y, y, &C_C3);
        if (!fe_isodd(y)) fe_neg(y, y);
    } else {
        fe gx2;
        fe_mul(xn, &C_X1N, &tv1);
        fe_mul(y, y, u); fe_mul(y, y, &C_C2);
        fe_sq(&t, y); fe_mul(&t, &t, &gxd);
        fe_mul(&gx2, &gx1, &tv1);
        if (!fe_eq(&t, &gx2)) fe_mul(y, y, &C_C3);
        if (fe_isodd(y)) fe_neg(y, y);
    }
}

/* batch-invert den[0..n) in place (all non-zero), 3 multiplications each + 1 inversion */
static int batch_invert(fe *den, size_t n)
{
    fe *acc = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1)), run, inv, t;
    if (!acc) return -1;
    fe_set(&run, 1);
    for (size_t i = 0; i < n; i++) { acc[i] = run; fe_mul(&run, &run, &den[i]); }
    fe_invert(&inv, &run);
    for (size_t i = n; i-- > 0;) {
        fe_mul(&t, &inv, &acc[i]);
        fe_mul(&inv, &inv, &den[i]);
        den[i] = t;
    }
    PyMem_RawFree(acc);
    return 0;
}

/* hash_to_u_batch(msgs, dst_prime) -> (bytes, [indices needing the slow path]) */
static PyObject *py_hash_to_u_batch(PyObject *self, PyObject *args)
{
    PyObject *seq, *msgs;
    Py_buffer dstp;
    if (!PyArg_ParseTuple(args, "Oy*", &seq, &dstp)) return NULL;
    msgs = PySequence_Fast(seq, "msgs must be a sequence of bytes");
    if (!msgs) { PyBuffer_Release(&dstp); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(msgs);
    PyObject *out = PyBytes_FromStringAndSize(NULL, 32 * n), *special = PyList_New(0);
    fe *num = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1));
    fe *den = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1));
    if (!out || !special || !num || !den) { PyErr_NoMemory(); goto fail; }
    uint8_t post0[3] = {0, 96, 0}, zpad[128] = {0};
    sha512_ctx pre;
    sha512_init(&pre);
    sha512_update(&pre, zpad, 128);
    const uint8_t *dp = dstp.buf;
    size_t dl = (size_t)dstp.len;
    for (Py_ssize_t i = 0; i < n; i++) {
        char *m;
        Py_ssize_t ml;
        if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(msgs, i), &m, &ml) < 0) goto fail;
        uint8_t b0[64], b1[64], x[64], ctr;
        sha512_ctx c = pre;
        sha512_update(&c, (const uint8_t *)m, (size_t)ml);
        sha512_update(&c, post0, 3);
        sha512_update(&c, dp, dl);
        sha512_final(&c, b0);
        sha512_init(&c); sha512_update(&c, b0, 64); ctr = 1; sha512_update(&c, &ctr, 1);
        sha512_update(&c, dp, dl); sha512_final(&c, b1);
        for (int k = 0; k < 64; k++) x[k] = b0[k] ^ b1[k];
        sha512_init(&c); sha512_update(&c, x, 64); ctr = 2; sha512_update(&c, &ctr, 1);
        sha512_update(&c, dp, dl); sha512_final(&c, b0); /* b0 now holds b2 */
        uint8_t ub_be[48];
        memcpy(ub_be, b1 + 48, 16);
        memcpy(ub_be + 16, b0, 32);
        fe ua, ub, xn0, xd0, y0, xn1, xd1, y1, dd, t, xdd, nn, d2, s;
        fe_from_be48(&ua, b1);
        fe_from_be48(&ub, ub_be);
        ell2(&xn0, &xd0, &y0, &ua);
        ell2(&xn1, &xd1, &y1, &ub);
        fe_mul(&dd, &xn1, &xd0); fe_mul(&t, &xn0, &xd1); fe_sub(&dd, &dd, &t);
        if (fe_iszero(&dd)) {
            PyObject *ix = PyLong_FromSsize_t(i);
            if (!ix || PyList_Append(special, ix) < 0) { Py_XDECREF(ix); goto fail; }
            Py_DECREF(ix);
            fe_set(&num[i], 0); fe_set(&den[i], 1);
            continue;
        }
        fe_mul(&xdd, &xd0, &xd1);
        fe_sub(&nn, &y1, &y0); fe_mul(&nn, &nn, &xdd);
        fe_sq(&d2, &dd);
        fe_mul(&s, &C_J, &xdd); fe_add(&s, &s, &t);          /* t = xn0 xd1 */
        fe_mul(&t, &xn1, &xd0); fe_add(&s, &s, &t);
        fe_mul(&s, &s, &d2);
        fe_sq(&t, &nn); fe_mul(&t, &t, &xdd); fe_sub(&num[i], &t, &s);
        fe_mul(&den[i], &d2, &xdd);
    }
    if (batch_invert(den, (size_t)n) < 0) { PyErr_NoMemory(); goto fail; }
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        fe u;
        fe_mul(&u, &num[i], &den[i]);
        fe_tobytes(o + 32 * i, &u);
    }
    PyMem_RawFree(num); PyMem_RawFree(den);
    Py_DECREF(msgs); PyBuffer_Release(&dstp);
    return Py_BuildValue("(NN)", out, special);
fail:
    PyMem_RawFree(num); PyMem_RawFree(den);
    Py_XDECREF(out); Py_XDECREF(special); Py_DECREF(msgs); PyBuffer_Release(&dstp);
    return NULL;
}

/* --- point checks and the x-only [8] ------------------------------------------------- */

/* 0 canonical; 1 bit 255 set; 2 u >= p */
static int noncanonical(const uint8_t *s)
{
    if (s[31] & 0x80) return 1;
    if (s[31] != 0x7f) return 0;
    for (int i = 30; i > 0; i--) if (s[i] != 0xff) return 0;
    return s[0] >= 0xed ? 2 : 0;
}

static int is_zero32(const uint8_t *s) { for (int i = 0; i < 32; i++) if (s[i]) return 0; return 1; }

static int is_pm1(const uint8_t *s) /* u == p - 1 */
{
    if (s[0] != 0xec || s[31] != 0x7f) return 0;
    for (int i = 1; i < 31; i++) if (s[i] != 0xff) return 0;
    return 1;
}

static int on_curve(const fe *u) /* u^3 + A u^2 + u a non-zero square */
{
    fe g, one;
    fe_set(&one, 1);
    fe_add(&g, u, &C_J); fe_mul(&g, &g, u); fe_add(&g, &g, &one); fe_mul(&g, &g, u);
    return fe_legendre(&g) == 1;
}

static void times8_xz(fe *x, fe *z, const fe *w) /* engine._times8_xz */
{
    fe one, t1, t2, t3, s;
    fe_set(&one, 1);
    fe_add(&t1, w, &one); fe_sq(&t1, &t1);
    fe_sub(&t2, w, &one); fe_sq(&t2, &t2);
    fe_mul_small(&t3, w, 4);
    for (int k = 0; k < 3; k++) {
        if (k) {
            fe_add(&t1, x, z); fe_sq(&t1, &t1);
            fe_sub(&t2, x, z); fe_sq(&t2, &t2);
            fe_sub(&t3, &t1, &t2);
        }
        fe_mul(x, &t1, &t2);
        fe_mul_small(&s, &t3, 121666); fe_add(&s, &s, &t2); fe_mul(z, &t3, &s);
    }
}

/* check_points(blob) -> -1 if every point is canonical, not 0 / -1 and on curve25519;
 * else index * 8 + code (codes 1-4 as validate_points' messages) */
static PyObject *py_check_points(PyObject *self, PyObject *args)
{
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    const uint8_t *s = b.buf;
    Py_ssize_t n = b.len / 32, bad = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && bad < 0; i++) {
        const uint8_t *q = s + 32 * i;
        int nc = noncanonical(q);
        fe u;
        if (nc) { bad = 8 * i + nc; break; }
        if (is_zero32(q) || is_pm1(q)) { bad = 8 * i + 3; break; }
        fe_frombytes(&u, q);
        if (!on_curve(&u)) bad = 8 * i + 4;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromSsize_t(bad);
}

/* validate_witnessed(blob, check_subgroup) -> bytes of u(R), or int index * 8 + code:
 * 1-4 as above, 5 non-canonical witness, 6 witness not on curve, 7 [8]W != R */
static PyObject *py_validate_witnessed(PyObject *self, PyObject *args)
{
    Py_buffer b;
    int sub;
    if (!PyArg_ParseTuple(args, "y*p", &b, &sub)) return NULL;
    Py_ssize_t n = b.len / 64, bad = -1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 32 * n);
    if (!out) { PyBuffer_Release(&b); return NULL; }
    const uint8_t *s = b.buf;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *r = s + 64 * i, *w = r + 32;
        int nc = noncanonical(r);
        fe ru, wu, x, z, t;
        if (nc) { bad = 8 * i + nc; break; }
        if (is_zero32(r) || is_pm1(r)) { bad = 8 * i + 3; break; }
        memcpy(o + 32 * i, r, 32);
        fe_frombytes(&ru, r);
        if (!sub) {
            if (!on_curve(&ru)) { bad = 8 * i + 4; break; }
            continue;
        }
        if (noncanonical(w)) { bad = 8 * i + 5; break; }
        fe_frombytes(&wu, w);
        if (is_zero32(w) || !on_curve(&wu)) { bad = 8 * i + 6; break; }
        times8_xz(&x, &z, &wu);
        fe_mul(&t, &ru, &z);
        if (fe_iszero(&z) || !fe_eq(&x, &t)) { bad = 8 * i + 7; break; }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    if (bad >= 0) { Py_DECREF(out); return PyLong_FromSsize_t(bad); }
    return out;
}

/* times8_witnessed(blob) -> u([8]W) || u(W) per 32-byte u(W); None if some [8]W = O */
static PyObject *py_times8_witnessed(PyObject *self, PyObject *args)
{
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    Py_ssize_t n = b.len / 32;
    fe *xs = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1));
    fe *zs = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1));
    PyObject *out = PyBytes_FromStringAndSize(NULL, 64 * n);
    int zero = 0, oom = 0;
    if (!xs || !zs || !out) { PyErr_NoMemory(); goto done; }
    const uint8_t *s = b.buf;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !zero; i++) {
        fe w;
        fe_frombytes(&w, s + 32 * i);
        times8_xz(&xs[i], &zs[i], &w);
        zero = fe_iszero(&zs[i]);
    }
    if (!zero && batch_invert(zs, (size_t)n) < 0) oom = 1;
    if (!zero && !oom)
        for (Py_ssize_t i = 0; i < n; i++) {
            fe u;
            fe_mul(&u, &xs[i], &zs[i]);
            fe_tobytes(o + 64 * i, &u);
            memcpy(o + 64 * i + 32, s + 32 * i, 32);
        }
    Py_END_ALLOW_THREADS
    if (oom) { PyErr_NoMemory(); Py_CLEAR(out); }
    else if (zero) { Py_DECREF(out); out = Py_None; Py_INCREF(out); }
done:
    PyMem_RawFree(xs); PyMem_RawFree(zs); PyBuffer_Release(&b);
    if (PyErr_Occurred()) { Py_XDECREF(out); return NULL; }
    return out;
}

/* --- multi-buffer X25519 driver --------------------------------------------------------- */

typedef uint32_t (*mb8_fn)(uint8_t *const out[8], const uint8_t *const k[8],
                           const uint8_t *const u[8]);

/* x25519_mb8(fn_address, scalar32, blob) -> bytes, or (index, lane status) of the first
 * lane the library refused (status 4 = low-order input: the result would be zero) */
static PyObject *py_x25519_mb8(PyObject *self, PyObject *args)
{
    unsigned long long addr;
    Py_buffer k, b;
    if (!PyArg_ParseTuple(args, "Ky*y*", &addr, &k, &b)) return NULL;
    if (k.len != 32 || b.len % 32) {
        PyBuffer_Release(&k); PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "scalar must be 32 bytes, points 32 bytes each");
        return NULL;
    }
    mb8_fn fn = (mb8_fn)(uintptr_t)addr;
    Py_ssize_t n = b.len / 32, bad = -1;
    uint32_t bad_sts = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, b.len);
    if (!out) { PyBuffer_Release(&k); PyBuffer_Release(&b); return NULL; }
    const uint8_t *s = b.buf;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    uint8_t in[8][32], res[8][32];
    uint8_t *outp[8];
    const uint8_t *kp[8], *up[8];
    for (int l = 0; l < 8; l++) { outp[l] = res[l]; kp[l] = k.buf; up[l] = in[l]; }
    for (Py_ssize_t g = 0; g < n && bad < 0; g += 8) {
        int lanes = n - g < 8 ? (int)(n - g) : 8;
        for (int l = 0; l < 8; l++) {
            memcpy(in[l], s + 32 * (g + (l < lanes ? l : 0)), 32);
            in[l][31] &= 0x7f; /* RFC 7748: mask bit 255 */
        }
        uint32_t sts = fn(outp, kp, up);
        for (int l = 0; l < lanes; l++) {
            uint32_t ls = (sts >> (4 * l)) & 0xF;
            if (ls) { bad = g + l; bad_sts = ls; break; }
            memcpy(o + 32 * (g + l), res[l], 32);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&k); PyBuffer_Release(&b);
    if (bad >= 0) { Py_DECREF(out); return Py_BuildValue("(nI)", bad, bad_sts); }
    return out;
}

/* fe_roundtrip(bytes32) -> canonical bytes of the value mod p (tests of the field code) */
static PyObject *py_fe_ops(PyObject *self, PyObject *args)
{
    Py_buffer a, c;
    if (!PyArg_ParseTuple(args, "y*y*", &a, &c)) return NULL;
    if (a.len != 32 || c.len != 32) {
        PyBuffer_Release(&a); PyBuffer_Release(&c);
        PyErr_SetString(PyExc_ValueError, "32-byte field elements");
        return NULL;
    }
    fe x, y, r[7];
    uint8_t buf[7][32];
    fe_frombytes(&x, a.buf); fe_frombytes(&y, c.buf);
    fe_add(&r[0], &x, &y); fe_sub(&r[1], &x, &y); fe_mul(&r[2], &x, &y); fe_sq(&r[3], &x);
    fe_invert(&r[4], &x); fe_pow22523(&r[5], &x);
    fe_set(&r[6], (uint64_t)(fe_legendre(&x) + 1));
    for (int i = 0; i < 7; i++) fe_tobytes(buf[i], &r[i]);
    PyBuffer_Release(&a); PyBuffer_Release(&c);
    return PyBytes_FromStringAndSize((const char *)buf, sizeof buf);
}

static PyMethodDef methods[] = {
    {"hash_to_u_batch", py_hash_to_u_batch, METH_VARARGS, "RFC 9380 u(Q0 + Q1) per message"},
    {"check_points", py_check_points, METH_VARARGS, "canonical + on-curve check"},
    {"validate_witnessed", py_validate_witnessed, METH_VARARGS, "witnessed point check"},
    {"times8_witnessed", py_times8_witnessed, METH_VARARGS, "u([8]W) || u(W)"},
    {"x25519_mb8", py_x25519_mb8, METH_VARARGS, "batch X25519 through mbx_x25519_mb8"},
    {"fe_ops", py_fe_ops, METH_VARARGS, "field operations (tests)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_psi_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__psi_native(void)
{
    /* c2 = 2^((p+3)/8) = 2 * 2^((p-5)/8), c3 = sqrt(-1) = 2^((p-1)/4) = 2 (2^((p-5)/8))^2 */
    fe two, b;
    fe_set(&two, 2);
    fe_pow22523(&b, &two);
    fe_mul(&C_C2, &b, &two);
    fe_sq(&C_C3, &b);
    fe_mul(&C_C3, &C_C3, &two);
    fe_set(&C_J, 486662);
    fe_neg(&C_X1N, &C_J);
    fe_mul(&C_JX1N, &C_J, &C_X1N);
    return PyModule_Create(&mod);
}
