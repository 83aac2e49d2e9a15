/* psi.native._psi_native: the PSI hot loops in C (GF(2^255 - 19) arithmetic in radix
 * 2^51, SHA-512, RFC 9380 curve25519 Elligator 2, x-only [8] and point checks) and a
 * driver that runs a batch through libcrypto_mb's mbx_x25519_mb8 (8 lanes per call).
 *
 * Every function mirrors a pure-Python function in psi/hash_to_curve.py or
 * psi/engine.py and returns byte-identical results (tests compare them). Where the CPU
 * has AVX-512 IFMA (and simd() is on) the field work runs eight lanes at a time
 * (psi_ifma.h on fe25519_ifma.h): per ID the two maps with their two exponentiations
 * interleaved, the sum and one lane-wise batched inversion per call; per point the
 * Legendre symbol sixteen points at a time and the x-only [8]. Else the scalar
 * functions here run, one ID or point at a time. Nothing here links against
 * libcrypto_mb: the caller passes the address of mbx_x25519_mb8 that ctypes resolved,
 * so the extension builds with gcc and Python's headers alone.
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

#include "fe25519.h"
#include "fe25519_ifma.h"
#include "sha512_x8.h"

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

static void curve_rhs(fe *g, const fe *u) /* u^3 + A u^2 + u */
{
    fe one;
    fe_set(&one, 1);
    fe_add(g, u, &C_J); fe_mul(g, g, u); fe_add(g, g, &one); fe_mul(g, g, u);
}

#include "psi_ifma.h"

/* psi/hash_to_curve.py _ell2_curve25519, step for step, in two halves around its one
 * exponentiation (so that a batch runs its exponentiations together, 8 lanes wide) */
typedef struct { fe u, tv1, xd, gxd, gx1, tv3; } ell2_state;

static void ell2_pre(ell2_state *s, fe *arg, const fe *u)
{
    fe t, tv2;
    s->u = *u;
    fe_sq(&s->tv1, u); fe_add(&s->tv1, &s->tv1, &s->tv1);
    fe_set(&t, 1); fe_add(&s->xd, &s->tv1, &t);
    fe_sq(&tv2, &s->xd);
    fe_mul(&s->gxd, &tv2, &s->xd);
    fe_mul(&s->gx1, &C_JX1N, &s->tv1); fe_add(&s->gx1, &s->gx1, &tv2);
    fe_mul(&s->gx1, &s->gx1, &C_X1N);
    fe_sq(&s->tv3, &s->gxd);
    fe_sq(arg, &s->tv3); fe_mul(arg, arg, &s->tv3); fe_mul(arg, arg, &s->gxd);
    fe_mul(arg, arg, &s->gx1);
}

static void ell2_post(fe *xn, fe *xd, fe *y, const ell2_state *s, const fe *pw)
{
    fe t, ngx1;
    *xd = s->xd;
    fe_mul(y, pw, &s->tv3); fe_mul(y, y, &s->gxd); fe_mul(y, y, &s->gx1);
    fe_sq(&t, y); fe_mul(&t, &t, &s->gxd);
    fe_neg(&ngx1, &s->gx1);
    if (fe_eq(&t, &s->gx1)) {
        *xn = C_X1N;
        if (!fe_isodd(y)) fe_neg(y, y);
    } else if (fe_eq(&t, &ngx1)) {
        *xn = C_X1N;
        fe_mul(y, y, &C_C3);
        if (!fe_isodd(y)) fe_neg(y, y);
    } else {
        fe gx2;
        fe_mul(xn, &C_X1N, &s->tv1);
        fe_mul(y, y, &s->u); fe_mul(y, y, &C_C2);
        fe_sq(&t, y); fe_mul(&t, &t, &s->gxd);
        fe_mul(&gx2, &s->gx1, &s->tv1);
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

static void expand_xmd96(uint8_t *b1, uint8_t *b2, const sha512_ctx *pre, const uint8_t *m,
                         size_t ml, const uint8_t *dp, size_t dl)
{   /* RFC 9380 5.3.1, len_in_bytes = 96; pre has absorbed Z_pad */
    static const uint8_t post0[3] = {0, 96, 0};
    uint8_t b0[64], x[64], ctr;
    sha512_ctx c = *pre;
    sha512_update(&c, m, ml);
    sha512_update(&c, post0, 3);
    sha512_update(&c, dp, dl);
    sha512_final(&c, b0);
    sha512_init(&c); sha512_update(&c, b0, 64); ctr = 1; sha512_update(&c, &ctr, 1);
    sha512_update(&c, dp, dl); sha512_final(&c, b1);
    for (int k = 0; k < 64; k++) x[k] = b0[k] ^ b1[k];
    sha512_init(&c); sha512_update(&c, x, 64); ctr = 2; sha512_update(&c, &ctr, 1);
    sha512_update(&c, dp, dl); sha512_final(&c, b2);
}

/* the two maps and their sum for one ID in scalar code: num / den = u(Q0 + Q1); returns
 * 1 where x(Q0) = x(Q1) (num = 0, den = 1 there: the caller's slow path) */
static int h2c_one(fe *num, fe *den, const fe *u0, const fe *u1)
{
    ell2_state s0, s1;
    fe a0, a1, xn0, xd0, y0, xn1, xd1, y1, dd, t, xdd, nn, d2, sm;
    ell2_pre(&s0, &a0, u0); ell2_pre(&s1, &a1, u1);
    fe_pow22523(&a0, &a0); fe_pow22523(&a1, &a1);
    ell2_post(&xn0, &xd0, &y0, &s0, &a0);
    ell2_post(&xn1, &xd1, &y1, &s1, &a1);
    fe_mul(&dd, &xn1, &xd0); fe_mul(&t, &xn0, &xd1); fe_sub(&dd, &dd, &t);
    if (fe_iszero(&dd)) { fe_set(num, 0); fe_set(den, 1); return 1; }
    fe_mul(&xdd, &xd0, &xd1);
    fe_sub(&nn, &y1, &y0); fe_mul(&nn, &nn, &xdd);
    fe_sq(&d2, &dd);
    fe_mul(&sm, &C_J, &xdd); fe_add(&sm, &sm, &t);          /* t = xn0 xd1 */
    fe_mul(&t, &xn1, &xd0); fe_add(&sm, &sm, &t);
    fe_mul(&sm, &sm, &d2);
    fe_sq(&t, &nn); fe_mul(&t, &t, &xdd); fe_sub(num, &t, &sm);
    fe_mul(den, &d2, &xdd);
    return 0;
}

/* u = num / den for n IDs (eight lanes per step where the CPU has IFMA), into o; the IDs
 * of the slow path flagged in spec; 0, or -1 out of memory */
static int h2c_field(uint8_t *o, uint8_t *spec, const fe *ua, const fe *ub, size_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_ifma()) return h2c_field8(o, spec, ua, ub, n);
#endif
    fe *num = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1)), *den = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1));
    int rc = num && den ? 0 : -1;
    for (size_t i = 0; i < n && !rc; i++) spec[i] = (uint8_t)h2c_one(&num[i], &den[i], &ua[i], &ub[i]);
    if (!rc) rc = batch_invert(den, n);
    for (size_t i = 0; i < n && !rc; i++) {
        fe u;
        fe_mul(&u, &num[i], &den[i]);
        fe_tobytes(o + 32 * i, &u);
    }
    PyMem_RawFree(num); PyMem_RawFree(den);
    return rc;
}

/* hash_to_u_batch(msgs, dst_prime[, width]) -> (bytes, [indices needing the slow path]);
 * msgs: a sequence of bytes or str (hashed as UTF-8), or with width > 0 a contiguous
 * buffer of n * width bytes: n messages of width bytes each (packed IDs) */
static PyObject *py_hash_to_u_batch(PyObject *self, PyObject *args)
{
    PyObject *seq, *msgs = NULL, *out = NULL, *special = NULL;
    Py_buffer dstp, packed = {0};
    Py_ssize_t width = 0, n;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*|n", &seq, &dstp, &width)) return NULL;
    if (width > 0) {
        if (PyObject_GetBuffer(seq, &packed, PyBUF_C_CONTIGUOUS) < 0) {
            PyBuffer_Release(&dstp); return NULL;
        }
        if (packed.len % width) {
            PyErr_SetString(PyExc_ValueError, "packed messages: length not a multiple of width");
            PyBuffer_Release(&packed); PyBuffer_Release(&dstp); return NULL;
        }
        n = packed.len / width;
    } else {
        msgs = PySequence_Fast(seq, "msgs must be a sequence of bytes");
        if (!msgs) { PyBuffer_Release(&dstp); return NULL; }
        n = PySequence_Fast_GET_SIZE(msgs);
    }
    size_t m = 8 * (((size_t)n + 7) / 8) + 8; /* whole groups of eight lanes */
    fe *ua = PyMem_RawMalloc(sizeof(fe) * m), *ub = PyMem_RawMalloc(sizeof(fe) * m);
    uint8_t *spec = PyMem_RawMalloc(m);
    int rc = 0;
    out = PyBytes_FromStringAndSize(NULL, 32 * n);
    special = PyList_New(0);
    if (!out || !special || !ua || !ub || !spec) { PyErr_NoMemory(); goto fail; }
    uint8_t zpad[128] = {0};
    sha512_ctx pre;
    sha512_init(&pre);
    sha512_update(&pre, zpad, 128);
    /* pass 1: hash_to_field (SHA-512 eight IDs at a time where they have one length) */
    for (Py_ssize_t i = 0; i < n;) {
        const uint8_t *mp[8];
        Py_ssize_t ml[8];
        int cnt = n - i < 8 ? (int)(n - i) : 8, same = cnt == 8;
        uint8_t b1[8][64], b2[8][64], ubuf[48];
        for (int k = 0; k < cnt; k++) {
            if (width > 0) {
                mp[k] = (const uint8_t *)packed.buf + (size_t)(i + k) * (size_t)width;
                ml[k] = width;
                continue;
            }
            PyObject *item = PySequence_Fast_GET_ITEM(msgs, i + k);
            const char *msg;
            if (PyUnicode_Check(item)) { /* an ID as str: its UTF-8 bytes */
                if (!(msg = PyUnicode_AsUTF8AndSize(item, &ml[k]))) goto fail;
            } else if (PyBytes_AsStringAndSize(item, (char **)&msg, &ml[k]) < 0) {
                goto fail;
            }
            mp[k] = (const uint8_t *)msg;
            same = same && ml[k] == ml[0];
        }
        if (!(same && expand_xmd96_x8(b1, b2, &pre, mp, (size_t)ml[0], dstp.buf,
                                      (size_t)dstp.len)))
            for (int k = 0; k < cnt; k++)
                expand_xmd96(b1[k], b2[k], &pre, mp[k], (size_t)ml[k], dstp.buf,
                             (size_t)dstp.len);
        for (int k = 0; k < cnt; k++, i++) {
            memcpy(ubuf, b1[k] + 48, 16);
            memcpy(ubuf + 16, b2[k], 32);
            fe_from_be48(&ua[i], b1[k]);
            fe_from_be48(&ub[i], ubuf);
        }
    }
    for (size_t i = (size_t)n; i < m; i++) { /* lanes past the end repeat a valid input */
        if (n) { ua[i] = ua[0]; ub[i] = ub[0]; } else { fe_set(&ua[i], 1); fe_set(&ub[i], 2); }
    }
    /* pass 2: the maps, the sums and one batched inversion */
    Py_BEGIN_ALLOW_THREADS
    rc = h2c_field((uint8_t *)PyBytes_AS_STRING(out), spec, ua, ub, (size_t)n);
    Py_END_ALLOW_THREADS
    if (rc < 0) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!spec[i]) continue;
        PyObject *ix = PyLong_FromSsize_t(i);
        if (!ix || PyList_Append(special, ix) < 0) { Py_XDECREF(ix); goto fail; }
        Py_DECREF(ix);
    }
    PyMem_RawFree(ua); PyMem_RawFree(ub); PyMem_RawFree(spec);
    Py_XDECREF(msgs); PyBuffer_Release(&dstp);
    if (width > 0) PyBuffer_Release(&packed);
    return Py_BuildValue("(NN)", out, special);
fail:
    PyMem_RawFree(ua); PyMem_RawFree(ub); PyMem_RawFree(spec);
    Py_XDECREF(out); Py_XDECREF(special); Py_XDECREF(msgs); PyBuffer_Release(&dstp);
    if (width > 0) PyBuffer_Release(&packed);
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

/* the field checks of points 0 .. lim-1 (scalar code): -1, or the first bad point's
 * index * 8 + code (4 / 6: not on the curve, 7: [8]W != R) */
static Py_ssize_t check_field(const uint8_t *s, Py_ssize_t lim, int stride, int sub)
{
    for (Py_ssize_t i = 0; i < lim; i++) {
        fe u, g;
        fe_frombytes(&u, s + stride * i + (sub ? 32 : 0));
        curve_rhs(&g, &u);
        if (fe_legendre(&g) != 1) return 8 * i + (sub ? 6 : 4);
        if (sub) {
            fe ru, x, z, t;
            fe_frombytes(&ru, s + stride * i);
            times8_xz(&x, &z, &u);
            fe_mul(&t, &ru, &z);
            if (fe_iszero(&z) || !fe_eq(&x, &t)) return 8 * i + 7;
        }
    }
    return -1;
}

/* The checks of validate_points (stride 32, sub = 0) and validate_witnessed (stride 64):
 * returns -1 (all good) or index * 8 + code (first bad point; codes as engine._REASONS,
 * 7 = [8]W != R). Encoding checks run first up to the first bad encoding, then the
 * field checks of the points before it (sixteen at a time with IFMA). */
static Py_ssize_t check_block(const uint8_t *s, Py_ssize_t n, int stride, int sub, uint8_t *o)
{
    Py_ssize_t lim = n, bad;
    int code = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *r = s + stride * i;
        int c = noncanonical(r);
        if (!c && (is_zero32(r) || is_pm1(r))) c = 3;
        if (!c && sub) {
            const uint8_t *w = r + 32;
            c = noncanonical(w) ? 5 : is_zero32(w) ? 6 : 0;
        }
        if (c) { lim = i; code = c; break; }
        if (o) memcpy(o + 32 * i, r, 32);
    }
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_ifma()) bad = check_field8(s, lim, stride, sub);
    else
#endif
    bad = check_field(s, lim, stride, sub);
    if (bad < 0 && lim < n) bad = 8 * lim + code;
    return bad;
}

/* check_points(blob) -> -1 if every point is canonical, not 0 / -1 and on curve25519;
 * else index * 8 + code (codes 1-4 as validate_points' messages) */
static PyObject *py_check_points(PyObject *self, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t bad;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    bad = check_block(b.buf, b.len / 32, 32, 0, NULL);
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
    Py_ssize_t bad;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*p", &b, &sub)) return NULL;
    Py_ssize_t n = b.len / 64;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 32 * n);
    if (!out) { PyBuffer_Release(&b); return NULL; }
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    bad = check_block(b.buf, n, 64, sub, o);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    if (bad == -1) return out;
    Py_DECREF(out);
    return PyLong_FromSsize_t(bad);
}

/* times8_witnessed's field work in scalar code: o gets u([8]W) || u(W) for n points at
 * s; 0 if fine, 1 if some [8]W = O, -1 out of memory */
static int times8_field(uint8_t *o, const uint8_t *s, size_t n)
{
    fe *xs = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1)), *zs = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1));
    int rc = xs && zs ? 0 : -1;
    for (size_t i = 0; i < n && !rc; i++) {
        fe w;
        fe_frombytes(&w, s + 32 * i);
        times8_xz(&xs[i], &zs[i], &w);
        rc = fe_iszero(&zs[i]);
    }
    if (!rc) rc = batch_invert(zs, n);
    for (size_t i = 0; i < n && !rc; i++) {
        fe u;
        fe_mul(&u, &xs[i], &zs[i]);
        fe_tobytes(o + 64 * i, &u);
        memcpy(o + 64 * i + 32, s + 32 * i, 32);
    }
    PyMem_RawFree(xs); PyMem_RawFree(zs);
    return rc;
}

/* times8_witnessed(blob) -> u([8]W) || u(W) per 32-byte u(W); None if some [8]W = O */
static PyObject *py_times8_witnessed(PyObject *self, PyObject *args)
{
    Py_buffer b;
    int rc;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    Py_ssize_t n = b.len / 32;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 64 * n);
    if (!out) { PyBuffer_Release(&b); return NULL; }
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_ifma()) rc = times8_field8(o, b.buf, (size_t)n);
    else
#endif
    rc = times8_field(o, b.buf, (size_t)n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    if (rc == 0) return out;
    Py_DECREF(out);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* --- multi-buffer X25519 driver --------------------------------------------------------- */

typedef uint32_t (*mb8_fn)(uint8_t *const out[8], const uint8_t *const k[8],
                           const uint8_t *const u[8]);

/* x25519_mb8(fn_address, scalar32, blob) -> bytes, or (index, lane status) of the first
 * lane the library refused (status 4 = low-order input: the result would be zero) */
static PyObject *py_x25519_mb8(PyObject *self, PyObject *args)
{
    (void)self;
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
    (void)self;
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

/* pow22523_batch(blob) -> z^((p-5)/8) for each 32-byte z (tests: SIMD vs scalar vs Python) */
static PyObject *py_pow22523_batch(PyObject *self, PyObject *args)
{
    Py_buffer b;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    Py_ssize_t n = b.len / 32;
    fe *v = PyMem_RawMalloc(sizeof(fe) * (n ? n : 1));
    PyObject *out = PyBytes_FromStringAndSize(NULL, 32 * n);
    if (!v || !out) { PyMem_RawFree(v); Py_XDECREF(out); PyBuffer_Release(&b); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < n; i++) fe_frombytes(&v[i], (const uint8_t *)b.buf + 32 * i);
    pow22523_batch(v, v, (size_t)n);
    for (Py_ssize_t i = 0; i < n; i++) fe_tobytes((uint8_t *)PyBytes_AS_STRING(out) + 32 * i, &v[i]);
    PyMem_RawFree(v);
    PyBuffer_Release(&b);
    return out;
}

/* simd(flag=None) -> whether the 8-lane IFMA code runs (set it with a bool) */
static PyObject *py_simd(PyObject *self, PyObject *args)
{
    PyObject *flag = Py_None;
    (void)self;
    if (!PyArg_ParseTuple(args, "|O", &flag)) return NULL;
    if (flag != Py_None) simd_enabled = PyObject_IsTrue(flag);
    return PyBool_FromLong(simd_enabled && have_ifma());
}

static PyMethodDef methods[] = {
    {"pow22523_batch", py_pow22523_batch, METH_VARARGS, "z^((p-5)/8) per element"},
    {"simd", py_simd, METH_VARARGS, "AVX-512 IFMA field code on/off"},
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
