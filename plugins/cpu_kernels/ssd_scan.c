/* The SSD (Mamba-2) scan as a sequential recurrence, for the CPU, float32, inference only.
 *
 * Per batch row b, head h (reading B/C group g = h / (nheads / ngroups)) and step t:
 *
 *     S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t B_t^T        S: (p, n)
 *     y_t = S_t C_t + D * x_t
 *
 * the recurrence of mamba4net.plugins.hybrid_mamba.ssd.ssd_scan_ref. No chunking: each step does
 * exactly the declared work (4 p n FLOPs per head), with the state held in L1 cache, transposed
 * to (n, p) so that both the update and the readout run along p in 16-lane vectors (GCC/Clang
 * vector extensions: AVX-512 registers where the CPU has them, split by the compiler elsewhere).
 *
 * Layouts (strides in elements; the innermost dimension of each is contiguous):
 *     x (b, l, h, p): strides sxb, sxl, sxh        dt (b, l, h): strides sdb, sdl
 *     B, C (b, l, g, n): strides s?b, s?l, group stride n
 *     A, D (h,) (D may be NULL)                    y (b, l, h, p) contiguous, written
 *     state (b, h, p, n) contiguous: read as the initial state, overwritten with the final one
 * Rows first <= b * h + h_index < last are scanned, so that callers can split the work between
 * threads. Returns 0, or 1 when out of memory, 2 when p is not a multiple of 16. The caller checks
 * the shapes (h a multiple of g, A and D of h entries, every tensor as large as its strides say).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef int64_t i64;  /* sizes, strides and offsets: 64 bits on every platform */

typedef float v16 __attribute__((vector_size(64)));

static inline v16 vload(const float *p) { v16 v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, v16 v) { __builtin_memcpy(p, &v, sizeof v); }
static inline v16 splat(float s) { return (v16){0} + s; }

/* All l steps of NB (1 or 2) blocks of 16 channels of one head. S: the blocks' state, n x NB
 * vectors (row j holds S[:, j] for those channels). */
static inline __attribute__((always_inline)) void
scan_blocks(const int NB, i64 l, i64 n, const float *x, i64 sxl, const float *dt, i64 sdl,
            float A, const float *B, i64 sbl, const float *C, i64 scl, float D,
            v16 *S, float *y, i64 syl)
{
    for (i64 t = 0; t < l; ++t) {
        const float *Bt = B + t * sbl, *Ct = C + t * scl;
        float d = dt[t * sdl];
        v16 a = splat(expf(d * A));
        v16 xv[2], y0[2], y1[2];
        for (int k = 0; k < NB; ++k) {
            xv[k] = vload(x + t * sxl + 16 * k);
            y0[k] = splat(D) * xv[k];
            y1[k] = splat(0.0f);
        }
        i64 j = 0;
        for (; j + 1 < n; j += 2) {  /* two accumulators per block: shorter dependency chains */
            v16 b0 = splat(d * Bt[j]), c0 = splat(Ct[j]), b1 = splat(d * Bt[j + 1]), c1 = splat(Ct[j + 1]);
            for (int k = 0; k < NB; ++k) {
                v16 s0 = a * S[j * NB + k] + b0 * xv[k];
                v16 s1 = a * S[(j + 1) * NB + k] + b1 * xv[k];
                S[j * NB + k] = s0;
                S[(j + 1) * NB + k] = s1;
                y0[k] += c0 * s0;
                y1[k] += c1 * s1;
            }
        }
        for (; j < n; ++j) {
            v16 b0 = splat(d * Bt[j]), c0 = splat(Ct[j]);
            for (int k = 0; k < NB; ++k) {
                v16 s0 = a * S[j * NB + k] + b0 * xv[k];
                S[j * NB + k] = s0;
                y0[k] += c0 * s0;
            }
        }
        for (int k = 0; k < NB; ++k) vstore(y + t * syl + 16 * k, y0[k] + y1[k]);
    }
}

int ssd_scan_f32(i64 l, i64 h, i64 p, i64 g, i64 n,
                 const float *x, i64 sxb, i64 sxl, i64 sxh,
                 const float *dt, i64 sdb, i64 sdl,
                 const float *A,
                 const float *B, i64 sbb, i64 sbl,
                 const float *C, i64 scb, i64 scl,
                 const float *D,
                 float *state, float *y, i64 first, i64 last)
{
    if (p % 16) return 2;
    v16 *S = aligned_alloc(64, sizeof(v16) * (size_t)(2 * (n > 0 ? n : 1)));
    if (!S) return 1;
    i64 hg = h / g;
    for (i64 bh = first; bh < last; ++bh) {
        i64 bi = bh / h, hi = bh % h, gi = hi / hg;
        float *st = state + bh * p * n;  /* (p, n) */
        for (i64 k0 = 0; k0 < p; k0 += 32) {  /* channels k0 .. k0 + 16 nb of the head */
            int nb = p - k0 >= 32 ? 2 : 1;
            for (i64 j = 0; j < n; ++j) {  /* the state in, transposed */
                float col[32];
                for (i64 k = 0; k < 16 * nb; ++k) col[k] = st[(k0 + k) * n + j];
                for (int k = 0; k < nb; ++k) S[j * nb + k] = vload(col + 16 * k);
            }
            const float *xs = x + bi * sxb + hi * sxh + k0, *dts = dt + bi * sdb + hi;
            const float *Bs = B + bi * sbb + gi * n, *Cs = C + bi * scb + gi * n;
            float *ys = y + (bi * l * h + hi) * p + k0;
            float Dh = D ? D[hi] : 0.0f;
            if (nb == 2)
                scan_blocks(2, l, n, xs, sxl, dts, sdl, A[hi], Bs, sbl, Cs, scl, Dh, S, ys, h * p);
            else
                scan_blocks(1, l, n, xs, sxl, dts, sdl, A[hi], Bs, sbl, Cs, scl, Dh, S, ys, h * p);
            for (i64 j = 0; j < n; ++j) {  /* the state out */
                float col[32];
                for (int k = 0; k < nb; ++k) vstore(col + 16 * k, S[j * nb + k]);
                for (i64 k = 0; k < 16 * nb; ++k) st[(k0 + k) * n + j] = col[k];
            }
        }
    }
    free(S);
    return 0;
}
