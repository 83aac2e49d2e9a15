/* The PSI field work eight lanes at a time (fe25519_ifma.h): RFC 9380 Elligator 2 and
 * the u-coordinate of Q0 + Q1 for eight IDs per step, the x-only [8] and the point
 * checks for eight points per step. Each function is the lane-wise form of a scalar
 * function of _psi_native.c (named beside it) and returns the same bytes and the same
 * refusals: the branches of the scalar code become masks and selects, its equality
 * tests canonical comparisons. Included by _psi_native.c after its constants C_*. */
#ifndef PSI_IFMA_H
#define PSI_IFMA_H
#if defined(__x86_64__) && defined(__GNUC__)

typedef struct { fe8 u, tv1, xd, gxd, gx1, tv3; } ell2_8;

IFMA static void ell2_pre8(ell2_8 *s, fe8 *arg, const fe8 *u) /* ell2_pre */
{
    fe8 t, tv2, c;
    fe one;
    fe_set(&one, 1);
    s->u = *u;
    fe8_sq(&s->tv1, u); fe8_add(&s->tv1, &s->tv1, &s->tv1);
    fe8_set1(&t, &one); fe8_add(&s->xd, &s->tv1, &t);
    fe8_sq(&tv2, &s->xd);
    fe8_mul(&s->gxd, &tv2, &s->xd);
    fe8_set1(&c, &C_JX1N); fe8_mul(&s->gx1, &c, &s->tv1); fe8_add(&s->gx1, &s->gx1, &tv2);
    fe8_set1(&c, &C_X1N); fe8_mul(&s->gx1, &s->gx1, &c);
    fe8_sq(&s->tv3, &s->gxd);
    fe8_sq(arg, &s->tv3); fe8_mul(arg, arg, &s->tv3); fe8_mul(arg, arg, &s->gxd);
    fe8_mul(arg, arg, &s->gx1);
}

/* ell2_post: e1 = (t == gx1), e2 = (t == -gx1); x = X1N / xd with an odd y where e1 or
 * e2, else x = X1N tv1 / xd with an even y */
IFMA static void ell2_post8(fe8 *xn, fe8 *y, const ell2_8 *s, const fe8 *pw)
{
    fe8 t, ngx1, yb, yc, c, gx2, x1n;
    fe8_mul(y, pw, &s->tv3); fe8_mul(y, y, &s->gxd); fe8_mul(y, y, &s->gx1);
    fe8_sq(&t, y); fe8_mul(&t, &t, &s->gxd);
    fe8_neg(&ngx1, &s->gx1);
    __mmask8 e1 = fe8_eq(&t, &s->gx1), e2 = (__mmask8)(fe8_eq(&t, &ngx1) & ~e1);
    fe8_set1(&c, &C_C3); fe8_mul(&yb, y, &c);
    fe8_mul(&yc, y, &s->u); fe8_set1(&c, &C_C2); fe8_mul(&yc, &yc, &c);
    fe8_sq(&t, &yc); fe8_mul(&t, &t, &s->gxd);
    fe8_mul(&gx2, &s->gx1, &s->tv1);
    __mmask8 e3 = fe8_eq(&t, &gx2);
    fe8_set1(&c, &C_C3); fe8_mul(&t, &yc, &c);
    fe8_select(&yc, e3, &yc, &t);
    fe8_select(&yc, e2, &yb, &yc);
    fe8_select(y, e1, y, &yc);
    __mmask8 odd_wanted = (__mmask8)(e1 | e2);
    fe8_neg(&t, y);
    fe8_select(y, (__mmask8)(fe8_isodd(y) ^ odd_wanted), y, &t);
    fe8_set1(&x1n, &C_X1N);
    fe8_mul(&t, &x1n, &s->tv1);
    fe8_select(xn, odd_wanted, &x1n, &t);
}

/* eight IDs' field elements u0, u1 -> num / den = u(Q0 + Q1); returns the lanes where
 * x(Q0) = x(Q1) (num = 0, den = 1 there: the caller's slow path) */
IFMA static __mmask8 h2c_group8(fe8 *num, fe8 *den, const fe *u0, const fe *u1)
{
    ell2_8 s[2];
    fe8 u, pw[2], xn0, y0, xn1, y1, dd, t, xdd, nn, d2, sm, c;
    fe8_load(&u, u0); ell2_pre8(&s[0], &pw[0], &u);
    fe8_load(&u, u1); ell2_pre8(&s[1], &pw[1], &u);
    fe8_pow22523_n(pw, 2);
    ell2_post8(&xn0, &y0, &s[0], &pw[0]);
    ell2_post8(&xn1, &y1, &s[1], &pw[1]);
    const fe8 *xd0 = &s[0].xd, *xd1 = &s[1].xd;
    fe8_mul(&dd, &xn1, xd0); fe8_mul(&t, &xn0, xd1); fe8_sub(&dd, &dd, &t);
    __mmask8 special = fe8_iszero(&dd);
    fe8_mul(&xdd, xd0, xd1);
    fe8_sub(&nn, &y1, &y0); fe8_mul(&nn, &nn, &xdd);
    fe8_sq(&d2, &dd);
    fe8_set1(&c, &C_J); fe8_mul(&sm, &c, &xdd); fe8_add(&sm, &sm, &t); /* t = xn0 xd1 */
    fe8_mul(&t, &xn1, xd0); fe8_add(&sm, &sm, &t);
    fe8_mul(&sm, &sm, &d2);
    fe8_sq(&t, &nn); fe8_mul(&t, &t, &xdd); fe8_sub(num, &t, &sm);
    fe8_mul(den, &d2, &xdd);
    if (special) {
        fe zero = {{0}}, one;
        fe_set(&one, 1);
        fe8_set1(&c, &zero); fe8_select(num, special, &c, num);
        fe8_set1(&c, &one); fe8_select(den, special, &c, den);
    }
    return special;
}

/* h2c_field: u = num / den of n IDs (ua, ub: whole groups of eight), the slow-path IDs
 * flagged in spec; 0, or -1 out of memory */
IFMA static int h2c_field8(uint8_t *o, uint8_t *spec, const fe *ua, const fe *ub, size_t n)
{
    size_t groups = (n + 7) / 8;
    fe8 *num = fe8_alloc(groups), *den = fe8_alloc(groups), *acc = fe8_alloc(groups);
    if (!num || !den || !acc) { free(num); free(den); free(acc); return -1; }
    for (size_t g = 0; g < groups; g++) {
        __mmask8 sp = h2c_group8(&num[g], &den[g], ua + 8 * g, ub + 8 * g);
        for (size_t j = 0; j < 8 && 8 * g + j < n; j++) spec[8 * g + j] = (sp >> j) & 1;
    }
    fe8_batch_invert(den, acc, groups);
    for (size_t g = 0; g < groups; g++) {
        int lanes = n - 8 * g < 8 ? (int)(n - 8 * g) : 8;
        uint8_t *dst[8];
        for (int j = 0; j < 8; j++) dst[j] = o + 32 * (8 * g + (size_t)(j < lanes ? j : 0));
        fe8_mul(&num[g], &num[g], &den[g]);
        fe8_tobytes(dst, lanes, &num[g]);
    }
    free(num); free(den); free(acc);
    return 0;
}

/* the eight lanes' 32-byte encodings at p + stride * lane, the lanes >= lanes repeating
 * lane 0 */
IFMA static void load8(fe8 *o, const uint8_t *p, size_t stride, int lanes)
{
    const uint8_t *s[8];
    for (int j = 0; j < 8; j++) s[j] = p + stride * (size_t)(j < lanes ? j : 0);
    fe8_frombytes(o, s);
}

IFMA static void curve_rhs8(fe8 *g, const fe8 *u) /* curve_rhs */
{
    fe8 c;
    fe one;
    fe_set(&one, 1);
    fe8_set1(&c, &C_J); fe8_add(g, u, &c); fe8_mul(g, g, u);
    fe8_set1(&c, &one); fe8_add(g, g, &c); fe8_mul(g, g, u);
}

IFMA static void times8_xz8(fe8 *x, fe8 *z, const fe8 *w) /* times8_xz */
{
    fe8 one, t1, t2, t3, s;
    fe c1;
    fe_set(&c1, 1);
    fe8_set1(&one, &c1);
    fe8_add(&t1, w, &one); fe8_sq(&t1, &t1);
    fe8_sub(&t2, w, &one); fe8_sq(&t2, &t2);
    fe8_add(&t3, w, w); fe8_add(&t3, &t3, &t3);
    for (int k = 0; k < 3; k++) {
        if (k) {
            fe8_add(&t1, x, z); fe8_sq(&t1, &t1);
            fe8_sub(&t2, x, z); fe8_sq(&t2, &t2);
            fe8_sub(&t3, &t1, &t2);
        }
        fe8_mul(x, &t1, &t2);
        fe8_mul_small(&s, &t3, 121666); fe8_add(&s, &s, &t2); fe8_mul(z, &t3, &s);
    }
}

/* check_field: the Legendre symbols (and with sub the [8]W == R test) of points
 * 0 .. lim-1, sixteen at a time; -1 or the first bad point's index * 8 + code */
IFMA static Py_ssize_t check_field8(const uint8_t *s, Py_ssize_t lim, int stride, int sub)
{
    fe one;
    fe_set(&one, 1);
    for (Py_ssize_t i = 0; i < lim; i += 16) {
        fe8 u[2], g[2], b[2], ones;
        int lanes[2];
        __mmask16 bad = 0, leg = 0;
        fe8_set1(&ones, &one);
        for (int h = 0; h < 2; h++) {
            Py_ssize_t left = lim - i - 8 * h;
            lanes[h] = left <= 0 ? 0 : left < 8 ? (int)left : 8;
            Py_ssize_t at = lanes[h] ? i + 8 * h : i;
            load8(&u[h], s + (size_t)stride * (size_t)at + (sub ? 32 : 0), (size_t)stride,
                  lanes[h] ? lanes[h] : 1);
            curve_rhs8(&g[h], &u[h]);
            b[h] = g[h];
        }
        fe8_pow22523_n(b, 2);
        for (int h = 0; h < 2; h++) {
            __mmask8 real = (__mmask8)((1u << lanes[h]) - 1), fail;
            fe8_sq(&b[h], &b[h]); fe8_mul(&b[h], &b[h], &g[h]); fe8_sq(&b[h], &b[h]);
            fail = (__mmask8)(~fe8_eq(&b[h], &ones) & real);
            leg |= (__mmask16)(fail << (8 * h));
            if (sub && lanes[h]) {
                fe8 r, x, z, t;
                load8(&r, s + (size_t)stride * (size_t)(i + 8 * h), (size_t)stride, lanes[h]);
                times8_xz8(&x, &z, &u[h]);
                fe8_mul(&t, &r, &z);
                fail |= (__mmask8)(fe8_iszero(&z) | ~fe8_eq(&x, &t));
            }
            bad |= (__mmask16)((fail & real) << (8 * h));
        }
        if (bad) {
            int lane = __builtin_ctz(bad);
            return 8 * (i + lane) + ((leg >> lane) & 1 ? (sub ? 6 : 4) : 7);
        }
    }
    return -1;
}

/* times8_witnessed's field work: o gets u([8]W) || u(W) for n points at s; 0 if fine, 1
 * if some [8]W = O, -1 out of memory */
IFMA static int times8_field8(uint8_t *o, const uint8_t *s, size_t n)
{
    size_t groups = (n + 7) / 8;
    fe8 *xs = fe8_alloc(groups), *zs = fe8_alloc(groups), *acc = fe8_alloc(groups);
    int rc = 0;
    if (!xs || !zs || !acc) { rc = -1; goto done; }
    for (size_t g = 0; g < groups; g++) {
        int lanes = n - 8 * g < 8 ? (int)(n - 8 * g) : 8;
        fe8 w;
        load8(&w, s + 32 * 8 * g, 32, lanes);
        times8_xz8(&xs[g], &zs[g], &w);
        if (fe8_iszero(&zs[g]) & (__mmask8)((1u << lanes) - 1)) { rc = 1; goto done; }
    }
    fe8_batch_invert(zs, acc, groups);
    for (size_t g = 0; g < groups; g++) {
        int lanes = n - 8 * g < 8 ? (int)(n - 8 * g) : 8;
        uint8_t *dst[8];
        fe8 u;
        for (int j = 0; j < 8; j++) dst[j] = o + 64 * (8 * g + (size_t)(j < lanes ? j : 0));
        fe8_mul(&u, &xs[g], &zs[g]);
        fe8_tobytes(dst, lanes, &u);
        for (int j = 0; j < lanes; j++) memcpy(dst[j] + 32, s + 32 * (8 * g + j), 32);
    }
done:
    free(xs); free(zs); free(acc);
    return rc;
}
#endif
#endif
