/* gradscope's fused CPU partial sums: Σg², Σ|g|, max|g| and the count of non-finite elements of many
 * dense float tensors, every element read once.
 *
 * ATen has no kernel that takes several reductions in one pass, and a pass per statistic reads the
 * gradients three or four times. Here each element is loaded once into SIMD registers and all four
 * partials are updated from it. Blocks of BLOCK elements accumulate in the tensor's precision across
 * the vector lanes (as ATen's float32 reductions do) and are added into double, so the result is at
 * least as accurate as torch's. The work is split over `threads` POSIX threads by element count, across
 * tensor boundaries, so a few large tensors keep every core busy.
 *
 * Built by gradscope/native.py with the system C compiler; nothing here depends on Python or torch.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 4096
#define MAX_THREADS 64
#define STRIPE 65536 /* elements a thread takes at a time; threads alternate stripes, reading side by side */

/* One pass over a tensor's elements. The compiler vectorises the block loop (omp simd); wider unrolling
 * (several accumulators per sum, or several streams) was measured slower: the loop runs at the speed
 * of memory already. */
#define REDUCE(NAME, T, BIG)                                                                          \
    static void NAME(const T *restrict x, int64_t n, double *restrict out) {                           \
        double sum_sq = 0.0, sum_abs = 0.0, max_abs = out[2];                                         \
        int64_t bad = 0;                                                                              \
        for (int64_t start = 0; start < n; start += BLOCK) {                                          \
            int64_t end = start + BLOCK < n ? start + BLOCK : n;                                      \
            T block_sq = 0, block_abs = 0, block_max = 0;                                             \
            int32_t block_bad = 0;                                                                    \
            _Pragma("omp simd reduction(+:block_sq,block_abs,block_bad) reduction(max:block_max)")     \
            for (int64_t i = start; i < end; i++) {                                                   \
                T v = x[i];                                                                           \
                T a = v < 0 ? -v : v;                                                                 \
                block_sq += v * v;                                                                    \
                block_abs += a;                                                                       \
                block_max = a > block_max ? a : block_max;                                            \
                block_bad += !(a <= BIG);                                                             \
            }                                                                                         \
            sum_sq += block_sq;                                                                       \
            sum_abs += block_abs;                                                                     \
            if (block_max > max_abs) max_abs = block_max;                                             \
            bad += block_bad;                                                                         \
        }                                                                                             \
        out[0] += sum_sq;                                                                             \
        out[1] += sum_abs;                                                                            \
        out[2] = max_abs;                                                                             \
        out[3] += (double)bad;                                                                        \
    }

REDUCE(reduce_f32, float, FLT_MAX)
REDUCE(reduce_f64, double, DBL_MAX)

typedef struct {
    const void *const *data;
    const int64_t *numel;
    int64_t count;
    int thread, threads; /* this worker reduces every threads-th stripe, from stripe number `thread` */
    int is_double;
    double *out; /* count x 4, zeroed */
} Work;

static void *run(void *arg) {
    Work *w = (Work *)arg;
    int64_t stripe = 0; /* stripes numbered across the tensors in order */
    for (int64_t j = 0; j < w->count; j++) {
        for (int64_t lo = 0; lo < w->numel[j]; lo += STRIPE, stripe++) {
            if (stripe % w->threads != w->thread) continue;
            int64_t len = w->numel[j] - lo < STRIPE ? w->numel[j] - lo : STRIPE;
            if (w->is_double)
                reduce_f64((const double *)w->data[j] + lo, len, w->out + 4 * j);
            else
                reduce_f32((const float *)w->data[j] + lo, len, w->out + 4 * j);
        }
    }
    return NULL;
}

/* Partials of `count` dense tensors into out (count x 4: sum_sq, sum_abs, max_abs, n_nonfinite).
 * Returns 0, or -1 when a thread could not be started or memory ran out (out is then undefined). */
int gradscope_partials(const void *const *data, const int64_t *numel, int64_t count, int is_double, int threads,
                       double *out) {
    int64_t total = 0;
    for (int64_t j = 0; j < count; j++) total += numel[j];
    for (int64_t k = 0; k < 4 * count; k++) out[k] = 0.0;
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (total < (int64_t)threads * 65536) threads = total > 65536 ? (int)(total / 65536) : 1;
    Work work[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    double *scratch = threads > 1 ? calloc((size_t)(threads - 1) * 4 * count, sizeof(double)) : NULL;
    if (threads > 1 && scratch == NULL) return -1;
    int started = 0, failed = 0;
    for (int t = 0; t < threads; t++) {
        Work w = {data, numel, count, t, threads, is_double,
                  t == 0 ? out : scratch + (size_t)(t - 1) * 4 * count};
        work[t] = w;
        if (t > 0) {
            if (pthread_create(&ids[t], NULL, run, &work[t]) != 0) { failed = 1; break; }
            started = t;
        }
    }
    run(&work[0]);
    for (int t = 1; t <= started; t++) pthread_join(ids[t], NULL);
    if (!failed) {
        for (int t = 1; t < threads; t++) {
            const double *part = work[t].out;
            for (int64_t j = 0; j < count; j++) {
                out[4 * j] += part[4 * j];
                out[4 * j + 1] += part[4 * j + 1];
                if (part[4 * j + 2] > out[4 * j + 2]) out[4 * j + 2] = part[4 * j + 2];
                out[4 * j + 3] += part[4 * j + 3];
            }
        }
    }
    free(scratch);
    return failed ? -1 : 0;
}
