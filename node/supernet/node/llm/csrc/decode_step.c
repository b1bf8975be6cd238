/* A decode step of the float16-weights format, fused: every running sequence advances one token
 * in one call, with no torch op boundary inside.
 *
 * At decode batch sizes a step of a 135M model issues ~1,800 small torch ops; their dispatch and
 * the passes over tiny tensors cost more than reading the weights (supernet/node/llm/fused.py has
 * the measurements). This computes the same step as supernet.node.llm.model.Llama with
 * DecodeAttention: float16 weights widened in registers, float32 activations, sums, softmax and KV
 * cache, the same formulas in another summation order (like any two batch shapes of the torch
 * path: |logit difference| ~1e-4).
 *
 * Pointer table (`ptrs`, addresses):
 *   0 embedding [vocab, dim] f16   1 head [vocab, dim] f16   2 final norm weight [dim] f32
 *   3 rope cos [positions, hd] f32  4 rope sin, first half negated [positions, hd] f32
 *   5 + 6 * layer: wqkv [(nh + 2 kv) hd, dim] f16, wo [dim, nh hd] f16, w13 [2 hidden, dim] f16,
 *     w2 [dim, hidden] f16, attention norm [dim] f32, ffn norm [dim] f32
 * Config (`cfg`): dim, n_heads, n_kv, head_dim, hidden, vocab, n_layers, rope positions.
 * KV cache: `keys` and `values` [layers, n_slots, kv, cap, hd] f32 (the engine's KVPool).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t f16;

#define MAX_HEAD_DIM 256

/* Sum of the 8 lanes of v. */
static inline float sum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

static inline __m256 load_f16(const f16 *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* sum_k a[k] w[k], w in float16: four independent sums over 32 columns at a time. */
static inline float dot_f16(const f16 *w, const float *a, int64_t cols) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= cols; k += 32) {
        s0 = _mm256_fmadd_ps(load_f16(w + k), _mm256_loadu_ps(a + k), s0);
        s1 = _mm256_fmadd_ps(load_f16(w + k + 8), _mm256_loadu_ps(a + k + 8), s1);
        s2 = _mm256_fmadd_ps(load_f16(w + k + 16), _mm256_loadu_ps(a + k + 16), s2);
        s3 = _mm256_fmadd_ps(load_f16(w + k + 24), _mm256_loadu_ps(a + k + 24), s3);
    }
    float s = sum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; k < cols; k++) s += _cvtsh_ss(w[k]) * a[k];
    return s;
}

/* Two weight rows against four rows of x: each widened weight vector serves four sums and each
 * loaded x vector two, so the loop is bound by the FMAs rather than by the loads. */
static inline void block2x4_f16(const f16 *w, const float *x, float *y, int64_t cols, int64_t n_out) {
    __m256 s00 = _mm256_setzero_ps(), s01 = _mm256_setzero_ps(), s02 = _mm256_setzero_ps();
    __m256 s03 = _mm256_setzero_ps(), s10 = _mm256_setzero_ps(), s11 = _mm256_setzero_ps();
    __m256 s12 = _mm256_setzero_ps(), s13 = _mm256_setzero_ps();
    const f16 *w1 = w + cols;
    const float *x1 = x + cols, *x2 = x1 + cols, *x3 = x2 + cols;
    int64_t k = 0;
    /* The next pair of rows (2 cols f16, contiguous after this pair), fetched while this one is
     * computed: two rows read side by side are two streams, which the hardware prefetcher
     * follows poorly (the loop ran at half its speed on weights from memory without this). */
    const char *next = (const char *)(w1 + cols);
    for (; k + 8 <= cols; k += 8) {
        if (k % 32 == 0) {
            _mm_prefetch(next + 4 * k, _MM_HINT_T0);
            _mm_prefetch(next + 4 * k + 64, _MM_HINT_T0);
        }
        __m256 a = load_f16(w + k), b = load_f16(w1 + k), v;
        v = _mm256_loadu_ps(x + k);
        s00 = _mm256_fmadd_ps(a, v, s00);
        s10 = _mm256_fmadd_ps(b, v, s10);
        v = _mm256_loadu_ps(x1 + k);
        s01 = _mm256_fmadd_ps(a, v, s01);
        s11 = _mm256_fmadd_ps(b, v, s11);
        v = _mm256_loadu_ps(x2 + k);
        s02 = _mm256_fmadd_ps(a, v, s02);
        s12 = _mm256_fmadd_ps(b, v, s12);
        v = _mm256_loadu_ps(x3 + k);
        s03 = _mm256_fmadd_ps(a, v, s03);
        s13 = _mm256_fmadd_ps(b, v, s13);
    }
    float t[8] = {sum8(s00), sum8(s01), sum8(s02), sum8(s03), sum8(s10), sum8(s11), sum8(s12), sum8(s13)};
    for (; k < cols; k++) {
        float a = _cvtsh_ss(w[k]), b = _cvtsh_ss(w1[k]);
        for (int i = 0; i < 4; i++) {
            t[i] += a * x[i * cols + k];
            t[4 + i] += b * x[i * cols + k];
        }
    }
    for (int i = 0; i < 4; i++) {
        y[i * n_out] = t[i];
        y[i * n_out + 1] = t[4 + i];
    }
}

/* y[b, n] = sum_k x[b, k] w[n, k]. One row of x: each thread reads its share of the weight rows
 * as one sequential stream (the prefetcher follows it; interleaved rows ran at half the speed).
 * More rows: pairs of weight rows against blocks of four rows of x (`block2x4_f16`), the rest
 * row by row. */
/* `threads`: the caller's torch setting (the engine calls from a worker thread, whose OpenMP
 * default would be every core). */
static void matmul_f16(const f16 *w, const float *x, float *y, int64_t rows, int64_t n_out, int64_t cols,
                       int threads) {
    if (rows == 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t n = 0; n < n_out; n++) y[n] = dot_f16(w + n * cols, x, cols);
        return;
    }
    int64_t pairs = n_out / 2, full = rows - rows % 4;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < pairs + n_out % 2; i++) {
        int64_t n = 2 * i;
        const f16 *r = w + n * cols;
        if (i < pairs) {
            for (int64_t b = 0; b < full; b += 4) block2x4_f16(r, x + b * cols, y + b * n_out + n, cols, n_out);
            for (int64_t b = full; b < rows; b++) {
                y[b * n_out + n] = dot_f16(r, x + b * cols, cols);
                y[b * n_out + n + 1] = dot_f16(r + cols, x + b * cols, cols);
            }
        } else {
            for (int64_t b = 0; b < rows; b++) y[b * n_out + n] = dot_f16(r, x + b * cols, cols);
        }
    }
}

static inline float dot(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= n; d += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), s1);
    }
    float s = sum8(_mm256_add_ps(s0, s1));
    for (; d < n; d++) s += a[d] * b[d];
    return s;
}

/* e^x for 8 floats: x = n ln2 + r, |r| <= ln2 / 2, e^r by the degree-7 polynomial of Cephes'
 * expf (its coefficients; ~1 ulp), times 2^n built in the exponent bits. Inputs are clamped to
 * [-87.3, 88.3], where the result stays a normal float. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x); /* ln2 in two parts */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}

/* out[i] = silu(gate[i]) * up[i] = gate / (1 + e^-gate) * up. */
static void swiglu(const float *gate, const float *up, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* out = x / sqrt(mean(x^2) + eps) * weight (torch's rms_norm, then the weight). */
static void rms_norm(const float *x, const float *weight, float *out, int64_t dim, float eps) {
    float inv = 1.0f / sqrtf(dot(x, x, dim) / (float)dim + eps);
    for (int64_t i = 0; i < dim; i++) out[i] = x[i] * inv * weight[i];
}

/* x * cos + roll(x, hd / 2) * sin, the sin table's first half negated (model.apply_rope). */
static void rope(float *x, const float *cos, const float *sin, int64_t hd) {
    int64_t h = hd / 2;
    for (int64_t i = 0; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = a * cos[i] - b * sin[i + h];
        x[i + h] = b * cos[i + h] + a * sin[i + h];
    }
}

/* Scratch floats `supernet_decode_step` needs for `rows` sequences attending over `span` positions
 * at most. */
int64_t supernet_decode_scratch(const int64_t *cfg, int64_t rows, int64_t span) {
    int64_t dim = cfg[0], nh = cfg[1], kv = cfg[2], hd = cfg[3], hidden = cfg[4];
    return rows * (2 * dim + (nh + 2 * kv) * hd + nh * hd + 3 * hidden + nh * span);
}

/* One decode step of `rows` sequences: sequence b feeds `tokens[b]` at position `positions[b]`
 * from pool slot `slots[b]`. Writes the final hidden states [rows, dim] and the logits
 * [rows, vocab]. Returns 0, or -1 for an input it does not cover (nothing written then). */
int supernet_decode_step(const int64_t *cfg, const uint64_t *ptrs, float eps, int64_t rows,
                         const int64_t *tokens, const int64_t *positions, const int64_t *slots, float *keys_all,
                         float *values_all, int64_t n_slots, int64_t cap, float *hidden_out, float *logits_out,
                         float *scratch, int64_t threads) {
    int64_t dim = cfg[0], nh = cfg[1], kv = cfg[2], hd = cfg[3], hidden = cfg[4], vocab = cfg[5];
    int64_t layers = cfg[6], n_rope = cfg[7];
    if (rows < 1 || hd > MAX_HEAD_DIM || hd % 2 || kv < 1 || nh % kv || threads < 1) return -1;
    int64_t span = 0;
    for (int64_t b = 0; b < rows; b++) {
        if (positions[b] < 0 || positions[b] >= cap || positions[b] >= n_rope) return -1;
        if (tokens[b] < 0 || tokens[b] >= vocab || slots[b] < 0 || slots[b] >= n_slots) return -1;
        if (positions[b] + 1 > span) span = positions[b] + 1;
    }
    int nt = (int)threads;
    const f16 *embed = (const f16 *)ptrs[0], *head = (const f16 *)ptrs[1];
    const float *final_norm = (const float *)ptrs[2];
    const float *cos_table = (const float *)ptrs[3], *sin_table = (const float *)ptrs[4];
    int64_t width = (nh + 2 * kv) * hd, group = nh / kv, slot_size = kv * cap * hd;
    float *x = scratch, *h = x + rows * dim, *qkv = h + rows * dim, *att = qkv + rows * width;
    float *act = att + rows * nh * hd, *mid = act + rows * 2 * hidden, *scores = mid + rows * hidden;
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t b = 0; b < rows; b++)
        for (int64_t i = 0; i < dim; i++) x[b * dim + i] = _cvtsh_ss(embed[tokens[b] * dim + i]);
    for (int64_t l = 0; l < layers; l++) {
        const uint64_t *p = ptrs + 5 + 6 * l;
        float *keys = keys_all + l * n_slots * slot_size, *values = values_all + l * n_slots * slot_size;
        for (int64_t b = 0; b < rows; b++) rms_norm(x + b * dim, (const float *)p[4], h + b * dim, dim, eps);
        matmul_f16((const f16 *)p[0], h, qkv, rows, width, dim, nt);
        for (int64_t b = 0; b < rows; b++) {
            const float *c = cos_table + positions[b] * hd, *s = sin_table + positions[b] * hd;
            float *row = qkv + b * width;
            for (int64_t j = 0; j < nh + kv; j++) rope(row + j * hd, c, s, hd);
            for (int64_t g = 0; g < kv; g++) {
                int64_t at = slots[b] * slot_size + (g * cap + positions[b]) * hd;
                memcpy(keys + at, row + (nh + g) * hd, hd * sizeof(float));
                memcpy(values + at, row + (nh + kv + g) * hd, hd * sizeof(float));
            }
        }
        /* attention, one (sequence, query head) per task; its output [rows, nh hd] goes in `att` */
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t task = 0; task < rows * nh; task++) {
            int64_t b = task / nh, q = task % nh, n = positions[b] + 1;
            const float *qv = qkv + b * width + q * hd;
            const float *kh = keys + slots[b] * slot_size + (q / group) * cap * hd;
            const float *vh = values + slots[b] * slot_size + (q / group) * cap * hd;
            float *sc = scores + task * span, best = -INFINITY, total = 0.0f;
            for (int64_t t = 0; t < n; t++) {
                sc[t] = dot(qv, kh + t * hd, hd) * scale;
                if (sc[t] > best) best = sc[t];
            }
            for (int64_t t = 0; t < n; t++) total += (sc[t] = expf(sc[t] - best));
            float out[MAX_HEAD_DIM] = {0};
            for (int64_t t = 0; t < n; t++) {
                float pt = sc[t] / total;
                for (int64_t d = 0; d < hd; d++) out[d] += pt * vh[t * hd + d];
            }
            memcpy(att + b * nh * hd + q * hd, out, hd * sizeof(float));
        }
        matmul_f16((const f16 *)p[1], att, h, rows, dim, nh * hd, nt);
        for (int64_t i = 0; i < rows * dim; i++) x[i] += h[i];
        for (int64_t b = 0; b < rows; b++) rms_norm(x + b * dim, (const float *)p[5], h + b * dim, dim, eps);
        matmul_f16((const f16 *)p[2], h, act, rows, 2 * hidden, dim, nt);
        /* SwiGLU into its own buffer [rows, hidden], in pieces of 256 split over the threads */
        int64_t pieces = (hidden + 255) / 256;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t task = 0; task < rows * pieces; task++) {
            int64_t b = task / pieces, at = task % pieces * 256, n = hidden - at < 256 ? hidden - at : 256;
            const float *gate = act + b * 2 * hidden + at;
            swiglu(gate, gate + hidden, mid + b * hidden + at, n);
        }
        matmul_f16((const f16 *)p[3], mid, h, rows, dim, hidden, nt);
        for (int64_t i = 0; i < rows * dim; i++) x[i] += h[i];
    }
    for (int64_t b = 0; b < rows; b++) rms_norm(x + b * dim, final_norm, hidden_out + b * dim, dim, eps);
    matmul_f16(head, hidden_out, logits_out, rows, vocab, dim, nt);
    return 0;
}

/* y [rows, n_out] = x [rows, cols] @ w [n_out, cols]^T, w in float16 (a projection of any batch:
 * the node's prefills use it, so one float16 copy of the weights serves every step). */
void supernet_matmul_f16(const f16 *w, const float *x, float *y, int64_t rows, int64_t n_out, int64_t cols,
                         int64_t threads) {
    matmul_f16(w, x, y, rows, n_out, cols, threads < 1 ? 1 : (int)threads);
}
