/* A decode step of the float16-weights and int8-weights formats, fused: every running sequence
 * advances one token in one call, with no torch op boundary inside.
 *
 * At decode batch sizes a step of a 135M model issues ~1,800 small torch ops; their dispatch and
 * the passes over tiny tensors cost more than reading the weights (supernet/node/llm/fused.py has
 * the measurements). This computes the same step as supernet.node.llm.model.Llama with
 * DecodeAttention: float16 weights widened in registers, float32 activations, sums, softmax and KV
 * cache, the same formulas in another summation order (like any two batch shapes of the torch
 * path: |logit difference| ~1e-4). In int8-weights a matrix is int8 rows with one float32 scale a
 * row (supernet/node/llm/int8.py): row n is q[n, :] * s[n], every product of which is a float16
 * value, so the format is float16-weights arithmetic over half the bytes: sum_k q[n, k] x[k] in
 * float32, times s[n].
 *
 * Pointer table (`ptrs`, addresses):
 *   0 embedding [vocab, dim] f16   1 head [vocab, dim] f16   2 final norm weight [dim] f32
 *   3 rope cos [positions, hd] f32  4 rope sin, first half negated [positions, hd] f32
 *   5 + 6 * layer: wqkv [(nh + 2 kv) hd, dim] f16, wo [dim, nh hd] f16, w13 [2 hidden, dim] f16,
 *     w2 [dim, hidden] f16, attention norm [dim] f32, ffn norm [dim] f32
 * Scale table (`scales`, int8-weights; NULL for float16): the same indices, the float32 row scales
 * of each int8 matrix (0 embedding, 1 head, 5 + 6 * layer + 0..3), the other entries unused.
 * Config (`cfg`): dim, n_heads, n_kv, head_dim, hidden, vocab, n_layers, rope positions.
 * KV cache: `keys` and `values` [layers, n_slots, kv, cap, hd] f32 (the engine's KVPool).
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
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

/* ---- the kernels' own worker threads ------------------------------------------------------------
 * A step is ~200 parallel loops a few microseconds apart. OpenMP served them well only from the
 * process's first thread: the engine steps from a worker thread, which gives libgomp a second
 * team, and with more OpenMP threads than cores libgomp stops spinning at its barriers and puts
 * threads to sleep at each one (~20 us a wake-up): a batch-1 step took 12 ms instead of 6.5. These
 * workers spin on their own flag between the loops of a step and sleep only after ~0.3 ms without
 * work, so an idle node burns no CPU. One `parallel_for` runs at a time (callers from several
 * threads take turns); the split is OpenMP's static one, contiguous ranges in thread order. */

typedef void (*range_fn)(void *ctx, int64_t begin, int64_t end);

#define MAX_WORKERS 63
#define SPINS_BEFORE_SLEEP 20000

typedef struct {
    _Alignas(64) atomic_int go; /* 1: a range is assigned; the worker sets 0 when done */
    atomic_int asleep;          /* 1 while the worker waits on `wake` (a caller then signals it) */
    pthread_cond_t wake;        /* its own: a call wakes only the workers it gives a range */
    range_fn fn;
    void *ctx;
    int64_t begin, end;
} WorkerSlot;

static struct {
    pthread_mutex_t call;  /* one parallel_for at a time */
    pthread_mutex_t sleep; /* with each slot's `wake`: where idle workers wait */
    int started;
    WorkerSlot slot[MAX_WORKERS];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};

static void *worker_main(void *arg) {
    WorkerSlot *me = arg;
    for (;;) {
        int spins = 0;
        while (!atomic_load(&me->go)) {
            if (++spins < SPINS_BEFORE_SLEEP) {
                _mm_pause();
                continue;
            }
            pthread_mutex_lock(&pool.sleep);
            atomic_store(&me->asleep, 1); /* seq_cst with the caller's `go` store and `asleep` load */
            while (!atomic_load(&me->go)) pthread_cond_wait(&me->wake, &pool.sleep);
            atomic_store(&me->asleep, 0);
            pthread_mutex_unlock(&pool.sleep);
        }
        me->fn(me->ctx, me->begin, me->end);
        atomic_store(&me->go, 0);
    }
    return NULL;
}

/* A forked child has none of the parent's workers: it starts its own. */
static void forget_workers(void) {
    pool.started = 0;
    pthread_mutex_init(&pool.call, NULL);
    pthread_mutex_init(&pool.sleep, NULL);
    for (int i = 0; i < MAX_WORKERS; i++) {
        atomic_store(&pool.slot[i].go, 0);
        atomic_store(&pool.slot[i].asleep, 0);
        pthread_cond_init(&pool.slot[i].wake, NULL);
    }
}

/* fn(ctx, begin, end) over [0, n) split into `threads` contiguous ranges, the caller taking the
 * first; returns when all are done. Fewer threads where workers cannot be started. */
static void parallel_for(int64_t n, int threads, range_fn fn, void *ctx) {
    if (threads > MAX_WORKERS + 1) threads = MAX_WORKERS + 1;
    if (threads > n) threads = (int)n;
    if (threads <= 1) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&pool.call);
    static int ready = 0;
    if (!ready) { /* once: the slots' condition variables, and the fork handler */
        for (int i = 0; i < MAX_WORKERS; i++) pthread_cond_init(&pool.slot[i].wake, NULL);
        pthread_atfork(NULL, NULL, forget_workers);
        ready = 1;
    }
    while (pool.started < threads - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&t, &attr, worker_main, &pool.slot[pool.started]);
        pthread_attr_destroy(&attr);
        if (failed) break;
        pool.started++;
    }
    if (threads > pool.started + 1) threads = pool.started + 1;
    for (int i = 1; i < threads; i++) {
        WorkerSlot *w = &pool.slot[i - 1];
        w->fn = fn;
        w->ctx = ctx;
        w->begin = n * i / threads;
        w->end = n * (i + 1) / threads;
        atomic_store(&w->go, 1);
        if (atomic_load(&w->asleep)) { /* only the workers given a range are woken */
            pthread_mutex_lock(&pool.sleep);
            pthread_cond_signal(&w->wake);
            pthread_mutex_unlock(&pool.sleep);
        }
    }
    fn(ctx, 0, n / threads);
    for (int i = 1; i < threads; i++)
        while (atomic_load(&pool.slot[i - 1].go)) _mm_pause();
    pthread_mutex_unlock(&pool.call);
}

/* A weight matrix [n_out, cols]: float16 (s NULL), or int8 rows scaled by s[n]. */
typedef struct {
    const void *w;
    const float *s;
} Mat;

#define INLINE static inline __attribute__((always_inline))

/* The weight loads, for `i8` a constant at every call (each caller is compiled twice). */
INLINE __m256 load_w(const void *w, int64_t k, int i8) {
    if (i8) return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)w + k))));
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const f16 *)w + k)));
}

INLINE float scalar_w(const void *w, int64_t k, int i8) {
    return i8 ? (float)((const int8_t *)w)[k] : _cvtsh_ss(((const f16 *)w)[k]);
}

INLINE const void *row_w(const void *w, int64_t n, int64_t cols, int i8) {
    return (const char *)w + n * cols * (i8 ? 1 : 2);
}

/* sum_k a[k] w[k]: four independent sums over 32 columns at a time. */
INLINE float dot_w(const void *w, const float *a, int64_t cols, int i8) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= cols; k += 32) {
        s0 = _mm256_fmadd_ps(load_w(w, k, i8), _mm256_loadu_ps(a + k), s0);
        s1 = _mm256_fmadd_ps(load_w(w, k + 8, i8), _mm256_loadu_ps(a + k + 8), s1);
        s2 = _mm256_fmadd_ps(load_w(w, k + 16, i8), _mm256_loadu_ps(a + k + 16), s2);
        s3 = _mm256_fmadd_ps(load_w(w, k + 24, i8), _mm256_loadu_ps(a + k + 24), s3);
    }
    float s = sum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; k < cols; k++) s += scalar_w(w, k, i8) * a[k];
    return s;
}

/* Two weight rows against four rows of x: each widened weight vector serves four sums and each
 * loaded x vector two, so the loop is bound by the FMAs rather than by the loads. */
INLINE void block2x4_w(const void *w, const float *x, float *y, int64_t cols, int64_t n_out, float scale0,
                       float scale1, int i8) {
    __m256 s00 = _mm256_setzero_ps(), s01 = _mm256_setzero_ps(), s02 = _mm256_setzero_ps();
    __m256 s03 = _mm256_setzero_ps(), s10 = _mm256_setzero_ps(), s11 = _mm256_setzero_ps();
    __m256 s12 = _mm256_setzero_ps(), s13 = _mm256_setzero_ps();
    const void *w1 = row_w(w, 1, cols, i8);
    const float *x1 = x + cols, *x2 = x1 + cols, *x3 = x2 + cols;
    int64_t k = 0;
    /* The next pair of rows (2 cols f16, contiguous after this pair), fetched while this one is
     * computed: two rows read side by side are two streams, which the hardware prefetcher
     * follows poorly (the loop ran at half its speed on weights from memory without this). */
    const char *next = (const char *)row_w(w, 2, cols, i8);
    int64_t ahead = i8 ? 2 : 4; /* bytes of the next pair per column */
    for (; k + 8 <= cols; k += 8) {
        if (k % 32 == 0) {
            _mm_prefetch(next + ahead * k, _MM_HINT_T0);
            if (!i8) _mm_prefetch(next + ahead * k + 64, _MM_HINT_T0);
        }
        __m256 a = load_w(w, k, i8), b = load_w(w1, k, i8), v;
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
        float a = scalar_w(w, k, i8), b = scalar_w(w1, k, i8);
        for (int i = 0; i < 4; i++) {
            t[i] += a * x[i * cols + k];
            t[4 + i] += b * x[i * cols + k];
        }
    }
    for (int i = 0; i < 4; i++) {
        y[i * n_out] = t[i] * scale0;
        y[i * n_out + 1] = t[4 + i] * scale1;
    }
}

/* y[b, n] = s[n] sum_k x[b, k] w[n, k] (s = 1 for float16), for output rows [2 i, 2 i + 2): pairs
 * of weight rows against blocks of four rows of x (`block2x4_w`), the rest row by row. */
INLINE void pair_rows(Mat m, const float *x, float *y, int64_t rows, int64_t n_out, int64_t cols, int64_t i,
                      int i8) {
    int64_t n = 2 * i, full = rows - rows % 4;
    const void *r = row_w(m.w, n, cols, i8);
    float s0 = i8 ? m.s[n] : 1.0f;
    if (n + 1 < n_out) {
        float s1 = i8 ? m.s[n + 1] : 1.0f;
        const void *r1 = row_w(m.w, n + 1, cols, i8);
        for (int64_t b = 0; b < full; b += 4) block2x4_w(r, x + b * cols, y + b * n_out + n, cols, n_out, s0, s1, i8);
        for (int64_t b = full; b < rows; b++) {
            y[b * n_out + n] = dot_w(r, x + b * cols, cols, i8) * s0;
            y[b * n_out + n + 1] = dot_w(r1, x + b * cols, cols, i8) * s1;
        }
    } else {
        for (int64_t b = 0; b < rows; b++) y[b * n_out + n] = dot_w(r, x + b * cols, cols, i8) * s0;
    }
}

/* y[b, n] = sum_k x[b, k] W[n, k]. One row of x: each thread reads its share of the weight rows
 * as one sequential stream (the prefetcher follows it; interleaved rows ran at half the speed).
 * More rows: `pair_rows`. `threads`: the caller's torch setting. One range function per weight
 * type, so that each inlined load is the type's own. */
typedef struct {
    Mat m;
    const float *x;
    float *y;
    int64_t rows, n_out, cols;
} MatmulTask;

static void rows_f16(void *ctx, int64_t begin, int64_t end) {
    MatmulTask *t = ctx;
    for (int64_t n = begin; n < end; n++) t->y[n] = dot_w(row_w(t->m.w, n, t->cols, 0), t->x, t->cols, 0);
}

static void rows_i8(void *ctx, int64_t begin, int64_t end) {
    MatmulTask *t = ctx;
    for (int64_t n = begin; n < end; n++)
        t->y[n] = dot_w(row_w(t->m.w, n, t->cols, 1), t->x, t->cols, 1) * t->m.s[n];
}

static void pairs_f16(void *ctx, int64_t begin, int64_t end) {
    MatmulTask *t = ctx;
    for (int64_t i = begin; i < end; i++) pair_rows(t->m, t->x, t->y, t->rows, t->n_out, t->cols, i, 0);
}

static void pairs_i8(void *ctx, int64_t begin, int64_t end) {
    MatmulTask *t = ctx;
    for (int64_t i = begin; i < end; i++) pair_rows(t->m, t->x, t->y, t->rows, t->n_out, t->cols, i, 1);
}

static void matmul(Mat m, const float *x, float *y, int64_t rows, int64_t n_out, int64_t cols, int threads) {
    MatmulTask t = {m, x, y, rows, n_out, cols};
    if (rows == 1) parallel_for(n_out, threads, m.s ? rows_i8 : rows_f16, &t);
    else parallel_for((n_out + 1) / 2, threads, m.s ? pairs_i8 : pairs_f16, &t);
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

/* One (sequence, query head) of a decode step's attention per task. */
typedef struct {
    const float *qkv, *keys, *values;
    float *att, *scores;
    const int64_t *positions, *slots;
    int64_t width, nh, hd, group, slot_size, cap, span;
    float scale;
} AttentionTask;

static void attend_range(void *ctx, int64_t begin, int64_t end) {
    AttentionTask *a = ctx;
    int64_t nh = a->nh, hd = a->hd;
    for (int64_t task = begin; task < end; task++) {
        int64_t b = task / nh, q = task % nh, n = a->positions[b] + 1;
        const float *qv = a->qkv + b * a->width + q * hd;
        const float *kh = a->keys + a->slots[b] * a->slot_size + (q / a->group) * a->cap * hd;
        const float *vh = a->values + a->slots[b] * a->slot_size + (q / a->group) * a->cap * hd;
        float *sc = a->scores + task * a->span, best = -INFINITY, total = 0.0f;
        for (int64_t t = 0; t < n; t++) {
            sc[t] = dot(qv, kh + t * hd, hd) * a->scale;
            if (sc[t] > best) best = sc[t];
        }
        for (int64_t t = 0; t < n; t++) total += (sc[t] = expf(sc[t] - best));
        float out[MAX_HEAD_DIM] = {0};
        for (int64_t t = 0; t < n; t++) {
            float pt = sc[t] / total;
            for (int64_t d = 0; d < hd; d++) out[d] += pt * vh[t * hd + d];
        }
        memcpy(a->att + b * nh * hd + q * hd, out, hd * sizeof(float));
    }
}

/* SwiGLU of one row's piece of 256 per task. */
typedef struct {
    const float *act;
    float *mid;
    int64_t hidden, pieces;
} SwigluTask;

static void swiglu_range(void *ctx, int64_t begin, int64_t end) {
    SwigluTask *g = ctx;
    for (int64_t task = begin; task < end; task++) {
        int64_t b = task / g->pieces, at = task % g->pieces * 256;
        int64_t n = g->hidden - at < 256 ? g->hidden - at : 256;
        const float *gate = g->act + b * 2 * g->hidden + at;
        swiglu(gate, gate + g->hidden, g->mid + b * g->hidden + at, n);
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
int supernet_decode_step(const int64_t *cfg, const uint64_t *ptrs, const uint64_t *scales, float eps, int64_t rows,
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
    Mat embed = {(const void *)ptrs[0], scales ? (const float *)scales[0] : NULL};
    Mat head = {(const void *)ptrs[1], scales ? (const float *)scales[1] : NULL};
    const float *final_norm = (const float *)ptrs[2];
    const float *cos_table = (const float *)ptrs[3], *sin_table = (const float *)ptrs[4];
    int64_t width = (nh + 2 * kv) * hd, group = nh / kv, slot_size = kv * cap * hd;
    float *x = scratch, *h = x + rows * dim, *qkv = h + rows * dim, *att = qkv + rows * width;
    float *act = att + rows * nh * hd, *mid = act + rows * 2 * hidden, *scores = mid + rows * hidden;
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t b = 0; b < rows; b++) {
        const void *row = row_w(embed.w, tokens[b], dim, embed.s != NULL);
        for (int64_t i = 0; i < dim; i++)
            x[b * dim + i] = embed.s ? scalar_w(row, i, 1) * embed.s[tokens[b]] : scalar_w(row, i, 0);
    }
    for (int64_t l = 0; l < layers; l++) {
        const uint64_t *p = ptrs + 5 + 6 * l;
        Mat w[4];
        for (int j = 0; j < 4; j++) w[j] = (Mat){(const void *)p[j], scales ? (const float *)scales[5 + 6 * l + j] : NULL};
        float *keys = keys_all + l * n_slots * slot_size, *values = values_all + l * n_slots * slot_size;
        for (int64_t b = 0; b < rows; b++) rms_norm(x + b * dim, (const float *)p[4], h + b * dim, dim, eps);
        matmul(w[0], h, qkv, rows, width, dim, nt);
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
        AttentionTask at = {qkv, keys, values, att, scores, positions, slots, width, nh, hd, group, slot_size, cap, span, scale};
        parallel_for(rows * nh, nt, attend_range, &at);
        matmul(w[1], att, h, rows, dim, nh * hd, nt);
        for (int64_t i = 0; i < rows * dim; i++) x[i] += h[i];
        for (int64_t b = 0; b < rows; b++) rms_norm(x + b * dim, (const float *)p[5], h + b * dim, dim, eps);
        matmul(w[2], h, act, rows, 2 * hidden, dim, nt);
        /* SwiGLU into its own buffer [rows, hidden], in pieces of 256 split over the threads */
        SwigluTask sw = {act, mid, hidden, (hidden + 255) / 256};
        parallel_for(rows * sw.pieces, nt, swiglu_range, &sw);
        matmul(w[3], mid, h, rows, dim, hidden, nt);
        for (int64_t i = 0; i < rows * dim; i++) x[i] += h[i];
    }
    for (int64_t b = 0; b < rows; b++) rms_norm(x + b * dim, final_norm, hidden_out + b * dim, dim, eps);
    matmul(head, hidden_out, logits_out, rows, vocab, dim, nt);
    return 0;
}

/* y [rows, n_out] = x [rows, cols] @ w [n_out, cols]^T, w in float16 (a projection of any batch:
 * the node's prefills use it, so one float16 copy of the weights serves every step). */
void supernet_matmul_f16(const f16 *w, const float *x, float *y, int64_t rows, int64_t n_out, int64_t cols,
                         int64_t threads) {
    matmul((Mat){w, NULL}, x, y, rows, n_out, cols, threads < 1 ? 1 : (int)threads);
}

/* The same with int8 rows scaled by s[n] (int8-weights). */
void supernet_matmul_i8(const int8_t *w, const float *s, const float *x, float *y, int64_t rows, int64_t n_out,
                        int64_t cols, int64_t threads) {
    matmul((Mat){w, s}, x, y, rows, n_out, cols, threads < 1 ? 1 : (int)threads);
}
