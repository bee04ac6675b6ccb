/* Fused CPU fake-quantization kernels: block formats (MX, NVFP4, per-group integers), integers
   with one scale per row (symmetric, asymmetric, the MSE clipping search), scaled small floats.

   nasq/formats/native.py compiles this file with the system C compiler on first use and calls it
   through ctypes. Each kernel computes, in one pass over memory, what the eager torch path of
   nasq/formats/{block,integer,floating}.py computes in four to ten: the same fp32 operations in
   the same order, so the results are equal bit for bit (tests/unit/test_native.py); the MSE
   search alone sums in double. Built without -ffast-math and with -ffp-contract=off: no
   reassociation, no fused multiply-add.

   Block kernels see the tensor as (N, C, H, W) with any strides (a channels-last activation goes
   through a tiled transpose); blocks run along C·H·W of each row n in logical (C, H, W) order, the
   last block of a row shorter (the torch path zero-pads it, which changes no block maximum). */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BLOCK 1024
#define LANES 16 /* partial sums of the MSE search */
#define ABS_MASK 0x7FFFFFFFu
#define EXP_FIELD 0x7F800000u
#define FINITE_MAX 0x7F7FFFFFu /* bits of the largest finite float: above it, inf and NaN */
#define MAGIC 12582912.0f      /* 1.5 * 2**23: (v + MAGIC) - MAGIC rounds |v| < 2**22 to an integer, ties to even */

enum { KIND_MX = 0, KIND_NVFP4 = 1, KIND_GROUP = 2 };

typedef struct {
    int emin, man_bits;
    float max_value;
} layout_t;

static inline float f_from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline uint32_t bits_of(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* floor(log2(a)) for positive finite a (subnormals included) */
static int floor_log2f(float a) { int k; frexpf(a, &k); return k - 1; }

/* rint(v) for |v| < 2**22 in the default rounding mode (ties to even), keeping v's sign on a zero
   result as rint does; no libm call, so the loops vectorise */
static inline float rint_small(float v) { return copysignf((fabsf(v) + MAGIC) - MAGIC, v); }

/* rint(v) for a code to be clamped to [lo, hi] afterwards: v is first moved into
   [lo - 1, hi + 1], which changes no clamped result and keeps |v| small enough for rint_small. */
static inline float rint_within(float v, float lo, float hi) {
    v = v > hi + 1.0f ? hi + 1.0f : v;
    v = v < lo - 1.0f ? lo - 1.0f : v;
    return rint_small(v);
}

/* round_float(y, layout) by the step route (nasq.formats.floatbits._round_by_step): clamp to the
   largest value, then round(y / step) * step with step = 2**(exponent - man_bits), never below
   the subnormal step. y / step and y * (1 / step) are the same exact power-of-two scaling. */
static inline float round_layout(float y, const layout_t *l) {
    const float m = l->max_value;
    y = y > m ? m : y;
    y = y < -m ? -m : y;
    uint32_t field = bits_of(y) & EXP_FIELD;
    const uint32_t floor_field = (uint32_t)(l->emin + 127) << 23;
    field = field < floor_field ? floor_field : field;
    uint32_t step_field = field - ((uint32_t)l->man_bits << 23);
    float step = f_from_bits(step_field), inv_step = f_from_bits((254u << 23) - step_field);
    return rint_small(y * inv_step) * step;
}

/* The largest |in[i]| as bits (the order of non-negative floats), and whether one is not finite. */
static inline uint32_t amax_bits(const float *restrict in, int64_t n) {
    uint32_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t a = bits_of(in[i]) & ABS_MASK;
        m = a > m ? a : m;
    }
    return m;
}

/* One block: in[0..n) -> out[0..n). Returns 0, or 1 where an input is not finite. */
static inline __attribute__((always_inline)) int quant_block(const float *restrict in, float *restrict out, int64_t n, int kind,
                       const float *p, const layout_t *el, const layout_t *scale_layout) {
    uint32_t mb = amax_bits(in, n);
    if (mb > FINITE_MAX) return 1;
    const float amax = f_from_bits(mb);
    if (kind == KIND_MX) {
        /* p: emax of the element layout */
        float a = amax < 0x1p-127f ? 0x1p-127f : amax;
        int e = floor_log2f(a) - (int)p[0];
        e = e < -127 ? -127 : e > 127 ? 127 : e;
        const float s = ldexpf(1.0f, e), inv_s = ldexpf(1.0f, -e); /* x / s == x * (1 / s): powers of two */
        const layout_t l = *el;
        for (int64_t i = 0; i < n; i++) out[i] = round_layout(in[i] * inv_s, &l) * s;
    } else if (kind == KIND_NVFP4) {
        /* p: tensor scale t, element max value (6) */
        const float t = p[0];
        const float s = round_layout(amax / p[1] / t, scale_layout);
        const float d = s > 0.0f ? s * t : 1.0f;
        const layout_t l = *el;
        for (int64_t i = 0; i < n; i++) out[i] = round_layout(in[i] / d, &l) * s * t;
    } else {
        /* p: qmax, smallest amax, significand bits of the scale */
        const float qmax = p[0];
        float a = amax < p[1] ? p[1] : amax;
        float s = a / qmax;
        float unit = ldexpf(1.0f, floor_log2f(s) - ((int)p[2] - 1));
        s = rint_small(s / unit) * unit;
        const float inv = 1.0f / s;
        for (int64_t i = 0; i < n; i++) {
            float q = rint_small(in[i] * inv);
            q = q < -qmax ? -qmax : q;
            q = q > qmax ? qmax : q;
            out[i] = q * s;
        }
    }
    return 0;
}

/* Copy a row (C, H, W) with strides s between a strided tensor and a contiguous buffer, in tiles
   of 16 x 16 over (C, H·W) when the strides allow (a channels-last row is a transpose). */
#define TILE 64
static void copy_row(const float *x, float *buf, int64_t C, int64_t H, int64_t W, const int64_t *s,
                     int to_buf) {
    const int64_t HW = H * W;
    if (s[2] == W * s[3]) { /* (H, W) flattens to one dim of stride s[3] */
        const int64_t sc = s[1], sp = s[3];
        for (int64_t c0 = 0; c0 < C; c0 += TILE)
            for (int64_t q0 = 0; q0 < HW; q0 += TILE) {
                const int64_t c1 = c0 + TILE < C ? c0 + TILE : C, q1 = q0 + TILE < HW ? q0 + TILE : HW;
                if (to_buf) /* writes in order, reads across the tile */
                    for (int64_t c = c0; c < c1; c++)
                        for (int64_t q = q0; q < q1; q++) buf[c * HW + q] = x[c * sc + q * sp];
                else /* the same: writes in order (channels-last: c innermost) */
                    for (int64_t q = q0; q < q1; q++)
                        for (int64_t c = c0; c < c1; c++) ((float *)x)[c * sc + q * sp] = buf[c * HW + q];
            }
        return;
    }
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) {
                const int64_t at = c * s[1] + h * s[2] + w * s[3], i = (c * H + h) * W + w;
                if (to_buf) buf[i] = x[at];
                else ((float *)x)[at] = buf[i];
            }
}

static int row_contiguous(const int64_t *shape, const int64_t *s) {
    return (shape[3] == 1 || s[3] == 1) && (shape[2] == 1 || s[2] == shape[3]) &&
           (shape[1] == 1 || s[1] == shape[2] * shape[3]);
}

/* x, out: (N, C, H, W) with strides xs, os (elements). el: element layout (emin, man_bits,
   max_value) for MX and NVFP4; NVFP4's block scales are E4M3 (sl). Returns 0, 1 where an input
   is not finite (out is then incomplete: the caller falls back), 2 for a block too long, 3 when
   out of memory. */
int nasq_block_quant(const float *x, float *out, const int64_t *shape, const int64_t *xs,
                     const int64_t *os, int64_t block, int kind, const float *p,
                     int el_emin, int el_man, float el_max, int sl_emin, int sl_man, float sl_max) {
    if (block < 1 || block > MAX_BLOCK) return 2;
    layout_t el = {el_emin, el_man, el_max}, sl = {sl_emin, sl_man, sl_max};
    const int64_t C = shape[1], H = shape[2], W = shape[3], L = C * H * W;
    const int x_dense = row_contiguous(shape, xs), o_dense = row_contiguous(shape, os);
    float *in_buf = NULL, *out_buf = NULL;
    if (!x_dense && !(in_buf = malloc(sizeof(float) * L))) return 3;
    if (!o_dense && !(out_buf = malloc(sizeof(float) * L))) { free(in_buf); return 3; }
    int rc = 0;
    for (int64_t n = 0; n < shape[0] && !rc; n++) {
        const float *row = x + n * xs[0];
        float *dst = out_buf ? out_buf : out + n * os[0];
        if (in_buf) { copy_row(row, in_buf, C, H, W, xs, 1); row = in_buf; }
        int64_t j = 0;
        /* whole blocks of the common sizes with a constant trip count (unrolled, no remainder) */
        if (block == 16)
            for (; j + 16 <= L && !rc; j += 16) rc = quant_block(row + j, dst + j, 16, kind, p, &el, &sl);
        else if (block == 32)
            for (; j + 32 <= L && !rc; j += 32) rc = quant_block(row + j, dst + j, 32, kind, p, &el, &sl);
        else if (block == 128)
            for (; j + 128 <= L && !rc; j += 128) rc = quant_block(row + j, dst + j, 128, kind, p, &el, &sl);
        for (; j < L && !rc; j += block)
            rc = quant_block(row + j, dst + j, L - j < block ? L - j : block, kind, p, &el, &sl);
        if (out_buf && !rc) copy_row(out + n * os[0], out_buf, C, H, W, os, 0);
    }
    free(in_buf);
    free(out_buf);
    return rc;
}

/* ---- Integers with one scale per row: the rows are runs of memory (a dense tensor, per tensor
   one row, per channel its dim-0 slices, whatever the order inside a row). ---- */

/* Symmetric fake quantization (nasq.formats.integer.SymmetricInt._fake_quantize, torch's
   fake_quantize_per_*_affine with zero point 0): q = clamp(round(x * (1 / s)) + 0, -qmax, qmax) * s.
   scales: one per row. Returns 0, or 1 where an input is not finite. */
int nasq_int_symmetric(const float *x, float *out, int64_t rows, int64_t len, const float *scales,
                       float qmax) {
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict in = x + r * len;
        float *restrict o = out + r * len;
        const float s = scales[r], inv = 1.0f / s;
        uint32_t worst = 0;
        for (int64_t i = 0; i < len; i++) {
            const uint32_t a = bits_of(in[i]) & ABS_MASK;
            worst = a > worst ? a : worst;
            float q = rint_within(in[i] * inv, -qmax, qmax) + 0.0f;
            q = q < -qmax ? -qmax : q;
            q = q > qmax ? qmax : q;
            o[i] = q * s;
        }
        if (worst > FINITE_MAX) return 1;
    }
    return 0;
}

/* (round-and-clamp(x / s) * s - x)**2 in fp32, as a double */
static inline double sq_error(float xi, float inv, float s, float qmax) {
    float q = rint_within(xi * inv, -qmax, qmax);
    q = q < -qmax ? -qmax : q;
    q = q > qmax ? qmax : q;
    const float e = q * s - xi;
    return (double)(e * e);
}

/* The clipping-ratio search of SymmetricInt._mse_amax on (rows, len) samples: for each row the
   first ratio with the least sum of squared errors, the errors computed elementwise in fp32 as the
   torch path does and summed in double. best: one index per row. */
int nasq_int_mse_search(const float *x, int64_t rows, int64_t len, const float *amax,
                        const float *ratios, int n_ratios, float qmax, int64_t *best) {
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict in = x + r * len;
        double least = INFINITY;
        best[r] = 0;
        for (int k = 0; k < n_ratios; k++) {
            const float s = amax[r] * ratios[k] / qmax, inv = 1.0f / s;
            /* LANES partial sums (element i into lane i % LANES), added in lane order at the end:
               a fixed order, and independent chains the compiler can vectorise */
            double lane[LANES] = {0};
            uint32_t worst = 0;
            const int64_t whole = len - len % LANES;
            for (int64_t i0 = 0; i0 < whole; i0 += LANES)
                for (int j = 0; j < LANES; j++) {
                    const float xi = in[i0 + j];
                    const uint32_t a = bits_of(xi) & ABS_MASK;
                    worst = a > worst ? a : worst;
                    lane[j] += sq_error(xi, inv, s, qmax);
                }
            for (int64_t i = whole; i < len; i++) {
                const uint32_t a = bits_of(in[i]) & ABS_MASK;
                worst = a > worst ? a : worst;
                lane[i - whole] += sq_error(in[i], inv, s, qmax);
            }
            if (worst > FINITE_MAX) return 1;
            double sum = 0.0;
            for (int j = 0; j < LANES; j++) sum += lane[j];
            if (sum < least) { least = sum; best[r] = k; }
        }
    }
    return 0;
}

/* Asymmetric (nasq.formats.integer.AsymmetricInt): per row lo = min(x, 0), hi = max(x, 0),
   s = (hi - lo) / qmax (at least min_amax) with its significand rounded down to sig_bits,
   z = round(-lo * (1 / s)), q = (clamp(round(x * (1 / s)) + z, 0, qmax) - z) * s. */
int nasq_int_asymmetric(const float *x, float *out, int64_t rows, int64_t len, float qmax,
                        float min_amax, int sig_bits) {
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict in = x + r * len;
        float *restrict o = out + r * len;
        float lo = 0.0f, hi = 0.0f;
        uint32_t worst = 0;
        for (int64_t i = 0; i < len; i++) {
            const uint32_t a = bits_of(in[i]) & ABS_MASK;
            worst = a > worst ? a : worst;
            lo = in[i] < lo ? in[i] : lo;
            hi = in[i] > hi ? in[i] : hi;
        }
        if (worst > FINITE_MAX) return 1;
        float s = (hi - lo) / qmax;
        s = s < min_amax ? min_amax : s;
        const float unit = ldexpf(1.0f, floor_log2f(s) - (sig_bits - 1));
        s = floorf(s / unit) * unit;
        const float inv = 1.0f / s, z = rint_small(-lo * inv);
        for (int64_t i = 0; i < len; i++) {
            float q = rint_within(in[i] * inv, -qmax, qmax) + z;
            q = q < 0.0f ? 0.0f : q;
            q = q > qmax ? qmax : q;
            o[i] = (q - z) * s;
        }
    }
    return 0;
}

/* max |x| over n floats (a dense tensor's memory), as its bits: the order of non-negative floats;
   an infinity gives +inf, a NaN something above it (the caller then asks torch). */
uint32_t nasq_abs_max_bits(const float *x, int64_t n) { return amax_bits(x, n); }

/* Scaled small floats (nasq.formats.floating.ScaledFloat): round_float(x / s, layout) * s, one
   scale per row. Returns 0, or 1 where an input is not finite. */
int nasq_scaled_float(const float *x, float *out, int64_t rows, int64_t len, const float *scales,
                      int el_emin, int el_man, float el_max) {
    const layout_t l = {el_emin, el_man, el_max};
    for (int64_t r = 0; r < rows; r++) {
        const float *restrict in = x + r * len;
        float *restrict o = out + r * len;
        const float s = scales[r];
        uint32_t worst = 0;
        for (int64_t i = 0; i < len; i++) {
            const uint32_t a = bits_of(in[i]) & ABS_MASK;
            worst = a > worst ? a : worst;
            o[i] = round_layout(in[i] / s, &l) * s;
        }
        if (worst > FINITE_MAX) return 1;
    }
    return 0;
}

/* A post-ReLU6 activation on the unsigned grid (nasq.supernet.layers.unsigned_activation_quant):
   clamp(round(x / s), 0, n) * s, one scale for the tensor. Returns 0, or 1 where an input is not finite. */
int nasq_unsigned_grid(const float *x, float *out, int64_t len, float s, float n) {
    const float *restrict in = x;
    float *restrict o = out;
    uint32_t worst = 0;
    for (int64_t i = 0; i < len; i++) {
        const uint32_t a = bits_of(in[i]) & ABS_MASK;
        worst = a > worst ? a : worst;
        float q = rint_within(in[i] / s, 0.0f, n);
        q = q < 0.0f ? 0.0f : q;
        q = q > n ? n : q;
        o[i] = q * s;
    }
    return worst > FINITE_MAX;
}

/* torch's fake_quantize_per_tensor_affine as nasq.supernet.layers._Int8FakeQuant computes it:
   r = round(x * (1 / s)) + 0, out = clamp(r, lo, hi) * s. Where mask is given, mask[i] says
   lo <= r <= hi (the gradient's mask). Returns 0 when every r lies inside [lo, hi], 2 when some
   does not, 1 where an input is not finite. */
int nasq_int8_affine(const float *x, float *out, int64_t len, float s, float lo, float hi,
                     uint8_t *mask) {
    const float *restrict in = x;
    float *restrict o = out;
    const float inv = 1.0f / s;
    uint32_t worst = 0;
    int outside = 0;
    for (int64_t i = 0; i < len; i++) {
        const uint32_t a = bits_of(in[i]) & ABS_MASK;
        worst = a > worst ? a : worst;
        float r = rint_within(in[i] * inv, lo, hi) + 0.0f;
        const int in_range = (r >= lo) & (r <= hi);
        outside |= !in_range;
        if (mask) mask[i] = (uint8_t)in_range;
        r = r < lo ? lo : r;
        r = r > hi ? hi : r;
        o[i] = r * s;
    }
    if (worst > FINITE_MAX) return 1;
    return outside ? 2 : 0;
}

/* The backward of a learned activation range (nasq.supernet.layers._LearnedRange, LSQ): with
   v = x / s, grad_x[i] = grad[i] where lo <= v <= hi, else 0; returns in *term_sum the sum of
   grad[i] * (round(v) - v) inside and grad[i] * clamp(v) outside: per chunk of RANGE_CHUNK
   elements the terms go to a buffer (one vectorised pass), then into LANES float partial sums, and
   each chunk's sum into a double. x, grad and grad_x share one memory order. Returns 1 where an
   input is not finite. */
#define RANGE_CHUNK 4096
int nasq_range_backward(const float *x, const float *grad, float *grad_x, int64_t len, float s, float lo,
                        float hi, double *term_sum) {
    const float *restrict in = x;
    const float *restrict g = grad;
    float *restrict gx = grad_x;
    float terms[RANGE_CHUNK];
    double total = 0.0;
    uint32_t worst = 0;
    for (int64_t c0 = 0; c0 < len; c0 += RANGE_CHUNK) {
        const int64_t n = len - c0 < RANGE_CHUNK ? len - c0 : RANGE_CHUNK;
        const float *restrict xc = in + c0;
        const float *restrict gc = g + c0;
        float *restrict oc = gx + c0;
        float *restrict t = terms;
        for (int64_t k = 0; k < n; k++) {
            const uint32_t a = bits_of(xc[k]) & ABS_MASK;
            worst = a > worst ? a : worst;
            const float v = xc[k] / s;
            const int inside = (v >= lo) & (v <= hi);
            float code = rint_within(v, lo, hi);
            code = code < lo ? lo : code;
            code = code > hi ? hi : code;
            oc[k] = inside ? gc[k] : 0.0f;
            t[k] = gc[k] * (inside ? code - v : code);
        }
        float lane[LANES] = {0};
        const int64_t whole = n - n % LANES;
        for (int64_t k0 = 0; k0 < whole; k0 += LANES)
            for (int j = 0; j < LANES; j++) lane[j] += t[k0 + j];
        for (int64_t k = whole; k < n; k++) lane[0] += t[k];
        float chunk = 0.0f;
        for (int j = 0; j < LANES; j++) chunk += lane[j];
        total += chunk;
    }
    *term_sum = total;
    return worst > FINITE_MAX;
}
