/* gpulog._native: fused single-pass CPU reductions (optional; torch ops are the fallback).
 *
 * hist_tf(x, base, threshold, counts, nthreads) -> (min, max, sum, sum_squares, nan_count)
 *   x: float32[n]; base: int32[32768]; threshold: float32[32768]; counts: int64[nbins] (added to).
 *   The same cell table as gpulog/_reduce/histogram.py: a float32's top 15 bits pick a cell,
 *   bin = base[cell] + (x >= threshold[cell]).  min/max skip NaN (the caller applies numpy's
 *   NaN propagation from nan_count); sums accumulate in double and propagate NaN/inf as numpy's.
 *
 * pr_binary(pred, labels, counts, num_thresholds, nthreads) -> bool
 *   pred: float32[n]; labels: integers of 1, 2, 4 or 8 bytes (bool too); counts: int64[2*T]:
 *   k = floor(pred * (T-1)) in float32, kept if 0 <= k <= T-1 (NaN dropped),
 *   counts[2k + label] += 1.  Returns False, leaving counts untouched, if a label is not 0 or 1
 *   (the caller then takes the general weighted path).
 *
 * Both run on the calling thread plus up to nthreads-1 helper POSIX threads with private counters,
 * claiming 64K-element chunks from a shared counter, and release the GIL.  Results do not depend
 * on the thread count (sums are added up per chunk, in chunk order).  On Linux the helpers are kept
 * off the caller's CPU (see run_parallel); a helper that cannot be started is run inline.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#ifdef __linux__
#include <sched.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N_CELLS 32768
#define CELL_SHIFT 17
#define MAX_THREADS 16

/* Workers claim CHUNK-element chunks from a shared counter instead of taking fixed shares: a
 * helper thread that gets less CPU (another process, OpenMP workers still spinning after a torch
 * op) then just takes fewer chunks, and the pass never waits on a starved helper.  Sums are kept
 * per chunk and added up in chunk order, so results do not depend on the thread count. */
#define CHUNK ((Py_ssize_t)1 << 16)

static inline Py_ssize_t claim(Py_ssize_t *next) { return __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); }

typedef struct {
    const float *x; Py_ssize_t n;
    const int32_t *base; const float *thr; Py_ssize_t nbins;
    double *chunk_sum, *chunk_sumsq;  /* one per chunk */
    Py_ssize_t next;                  /* next unclaimed chunk */
} hist_work;

typedef struct {
    hist_work *w;
    int64_t *sub;      /* LANES * nbins private counters */
    double mn, mx; int64_t nans;
} hist_job;

/* Four independent lanes: separate sub-histograms and accumulators break the store-to-load and
 * floating-point-add dependency chains that otherwise bound the loop at ~4 cycles per element. */
#define LANES 4

static inline void hist_one(float v, const int32_t *base, const float *thr, int64_t *sub, Py_ssize_t nb,
                            double *mn, double *mx, double *s, double *ss, int64_t *nans) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint32_t cell = (bits >> CELL_SHIFT) & (N_CELLS - 1);
    int32_t b = base[cell] + (v >= thr[cell]);
    if (b >= 0 && b < nb) sub[b]++;
    double d = (double)v;
    if (v != v) (*nans)++;
    else { *mn = d < *mn ? d : *mn; *mx = d > *mx ? d : *mx; }
    *s += d;
    *ss += d * d;
}

static void *hist_worker(void *arg) {
    hist_job *j = (hist_job *)arg;
    hist_work *w = j->w;
    const Py_ssize_t nb = w->nbins, nchunks = (w->n + CHUNK - 1) / CHUNK;
    double mn[LANES], mx[LANES];
    int64_t nans = 0;
    for (int l = 0; l < LANES; l++) { mn[l] = INFINITY; mx[l] = -INFINITY; }
    for (Py_ssize_t c = claim(&w->next); c < nchunks; c = claim(&w->next)) {
        const float *x = w->x + c * CHUNK;
        const Py_ssize_t m = w->n - c * CHUNK < CHUNK ? w->n - c * CHUNK : CHUNK;
        double s[LANES] = {0}, ss[LANES] = {0};
        Py_ssize_t i = 0;
        for (; i + LANES <= m; i += LANES)
            for (int l = 0; l < LANES; l++)
                hist_one(x[i + l], w->base, w->thr, j->sub + (size_t)l * nb, nb, &mn[l], &mx[l], &s[l],
                         &ss[l], &nans);
        for (; i < m; i++)  /* tail, lane 0 */
            hist_one(x[i], w->base, w->thr, j->sub, nb, &mn[0], &mx[0], &s[0], &ss[0], &nans);
        w->chunk_sum[c] = (s[0] + s[1]) + (s[2] + s[3]);
        w->chunk_sumsq[c] = (ss[0] + ss[1]) + (ss[2] + ss[3]);
    }
    j->mn = mn[0]; j->mx = mx[0];
    for (int l = 1; l < LANES; l++) {
        if (mn[l] < j->mn) j->mn = mn[l];
        if (mx[l] > j->mx) j->mx = mx[l];
    }
    j->nans = nans;
    return NULL;
}

typedef struct {
    const float *p; const char *lab; Py_ssize_t lsize; Py_ssize_t n; int t;
    Py_ssize_t next;  /* next unclaimed chunk */
    int bad;          /* a label was not 0 or 1: every worker stops */
} pr_work;

typedef struct { pr_work *w; int64_t *counts; } pr_job;

static inline int64_t read_label(const char *base, Py_ssize_t size, Py_ssize_t i) {
    switch (size) {
        case 1: return ((const int8_t *)base)[i];
        case 2: return ((const int16_t *)base)[i];
        case 4: return ((const int32_t *)base)[i];
        default: return ((const int64_t *)base)[i];
    }
}

static void *pr_worker(void *arg) {
    pr_job *j = (pr_job *)arg;
    pr_work *w = j->w;
    const float scale = (float)(w->t - 1);
    const Py_ssize_t nchunks = (w->n + CHUNK - 1) / CHUNK;
    for (Py_ssize_t c = claim(&w->next); c < nchunks; c = claim(&w->next)) {
        const Py_ssize_t hi = w->n - c * CHUNK < CHUNK ? w->n : (c + 1) * CHUNK;
        for (Py_ssize_t i = c * CHUNK; i < hi; i++) {
            int64_t label = read_label(w->lab, w->lsize, i);
            if (label != 0 && label != 1) { __atomic_store_n(&w->bad, 1, __ATOMIC_RELAXED); return NULL; }
            float k = floorf(w->p[i] * scale);
            if (k >= 0.0f && k <= scale) j->counts[2 * (int64_t)k + label]++;
        }
        if (__atomic_load_n(&w->bad, __ATOMIC_RELAXED)) return NULL;
    }
    return NULL;
}

static int get_buf(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected items of %zd bytes, got %zd", name, itemsize, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int clamp_threads(int nthreads, Py_ssize_t n) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (n < (Py_ssize_t)1 << 18) nthreads = 1;  /* not worth a thread */
    return nthreads;
}

/* Run worker(job_i) for i < n: job 0 on the calling thread, the others on helper threads.
 * Why the affinity: a freshly created thread is often placed on its creator's CPU and, living
 * only a few milliseconds, is never migrated; on a 2-core machine the "parallel" pass then runs
 * at the speed of one core (measured: 4.1 ms instead of 2.1 ms for 4M floats).  So on Linux the
 * helpers may run on any CPU this process may use except the one the caller is on now. */
static void run_parallel(void *(*worker)(void *), void *jobs, size_t job_size, int n) {
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    pthread_attr_t attr, *pattr = NULL;
#ifdef __linux__
    cpu_set_t allowed;
    int cpu = sched_getcpu();
    if (n > 1 && cpu >= 0 && cpu < CPU_SETSIZE && sched_getaffinity(0, sizeof allowed, &allowed) == 0 &&
        CPU_ISSET(cpu, &allowed) && CPU_COUNT(&allowed) > 1 && pthread_attr_init(&attr) == 0) {
        CPU_CLR(cpu, &allowed);
        if (pthread_attr_setaffinity_np(&attr, sizeof allowed, &allowed) == 0) pattr = &attr;
        else pthread_attr_destroy(&attr);
    }
#endif
    for (int t = 1; t < n; t++)
        started[t] = pthread_create(&tid[t], pattr, worker, (char *)jobs + (size_t)t * job_size) == 0;
    if (pattr) pthread_attr_destroy(pattr);
    worker(jobs);
    for (int t = 1; t < n; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        else worker((char *)jobs + (size_t)t * job_size);  /* could not start a thread: run it here */
    }
}

static PyObject *hist_tf(PyObject *self, PyObject *args) {
    PyObject *ox, *ob, *ot, *oc;
    int nthreads = 1;
    if (!PyArg_ParseTuple(args, "OOOO|i", &ox, &ob, &ot, &oc, &nthreads)) return NULL;
    Py_buffer x, base, thr, counts;
    if (get_buf(ox, &x, 0, 4, "x") < 0) return NULL;
    if (get_buf(ob, &base, 0, 4, "base") < 0) { PyBuffer_Release(&x); return NULL; }
    if (get_buf(ot, &thr, 0, 4, "threshold") < 0) { PyBuffer_Release(&x); PyBuffer_Release(&base); return NULL; }
    if (get_buf(oc, &counts, 1, 8, "counts") < 0) {
        PyBuffer_Release(&x); PyBuffer_Release(&base); PyBuffer_Release(&thr); return NULL;
    }
    PyObject *result = NULL;
    if (base.len / 4 != N_CELLS || thr.len / 4 != N_CELLS) {
        PyErr_SetString(PyExc_ValueError, "cell tables must have 32768 entries");
        goto done;
    }
    Py_ssize_t n = x.len / 4, nbins = counts.len / 8, nchunks = (n + CHUNK - 1) / CHUNK;
    nthreads = clamp_threads(nthreads, n);
    hist_job jobs[MAX_THREADS];
    int64_t *priv = calloc((size_t)nthreads * LANES * (size_t)nbins, sizeof(int64_t));
    double *sums = malloc(2 * (size_t)(nchunks > 0 ? nchunks : 1) * sizeof(double));
    if (!priv || !sums) { free(priv); free(sums); PyErr_NoMemory(); goto done; }
    hist_work work = {(const float *)x.buf, n, (const int32_t *)base.buf, (const float *)thr.buf, nbins,
                      sums, sums + nchunks, 0};
    double mn = INFINITY, mx = -INFINITY, s = 0.0, ss = 0.0;
    long long nans = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int t = 0; t < nthreads; t++)
        jobs[t] = (hist_job){&work, priv + (size_t)t * LANES * nbins, INFINITY, -INFINITY, 0};
    run_parallel(hist_worker, jobs, sizeof jobs[0], nthreads);
    int64_t *out = (int64_t *)counts.buf;
    for (int t = 0; t < nthreads * LANES; t++)
        for (Py_ssize_t b = 0; b < nbins; b++) out[b] += priv[(size_t)t * nbins + b];
    for (Py_ssize_t c = 0; c < nchunks; c++) { s += sums[c]; ss += sums[nchunks + c]; }
    for (int t = 0; t < nthreads; t++) {
        if (jobs[t].mn < mn) mn = jobs[t].mn;
        if (jobs[t].mx > mx) mx = jobs[t].mx;
        nans += jobs[t].nans;
    }
    Py_END_ALLOW_THREADS
    free(priv);
    free(sums);
    result = Py_BuildValue("ddddL", mn, mx, s, ss, nans);
done:
    PyBuffer_Release(&x); PyBuffer_Release(&base); PyBuffer_Release(&thr); PyBuffer_Release(&counts);
    return result;
}

static PyObject *pr_binary(PyObject *self, PyObject *args) {
    PyObject *op, *ol, *oc;
    int t_count, nthreads = 1;
    if (!PyArg_ParseTuple(args, "OOOi|i", &op, &ol, &oc, &t_count, &nthreads)) return NULL;
    Py_buffer p, lab, counts;
    if (get_buf(op, &p, 0, 4, "pred") < 0) return NULL;
    if (PyObject_GetBuffer(ol, &lab, PyBUF_C_CONTIGUOUS) < 0) { PyBuffer_Release(&p); return NULL; }
    if (get_buf(oc, &counts, 1, 8, "counts") < 0) { PyBuffer_Release(&p); PyBuffer_Release(&lab); return NULL; }
    PyObject *result = NULL;
    Py_ssize_t n = p.len / 4;
    Py_ssize_t lsize = lab.itemsize;
    if ((lsize != 1 && lsize != 2 && lsize != 4 && lsize != 8) || lab.len / lsize != n ||
        counts.len / 8 != 2 * (Py_ssize_t)t_count || t_count < 2) {
        PyErr_SetString(PyExc_ValueError, "pr_binary: mismatched lengths");
        goto done;
    }
    nthreads = clamp_threads(nthreads, n);
    int64_t *priv = calloc((size_t)nthreads * 2 * (size_t)t_count, sizeof(int64_t));
    if (!priv) { PyErr_NoMemory(); goto done; }
    pr_job jobs[MAX_THREADS];
    pr_work work = {(const float *)p.buf, (const char *)lab.buf, lsize, n, t_count, 0, 0};
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int t = 0; t < nthreads; t++) jobs[t] = (pr_job){&work, priv + (size_t)t * 2 * t_count};
    run_parallel(pr_worker, jobs, sizeof jobs[0], nthreads);
    bad = work.bad;
    int64_t *out = (int64_t *)counts.buf;
    if (!bad)
        for (int t = 0; t < nthreads; t++)
            for (Py_ssize_t b = 0; b < 2 * (Py_ssize_t)t_count; b++) out[b] += priv[(size_t)t * 2 * t_count + b];
    Py_END_ALLOW_THREADS
    free(priv);
    result = PyBool_FromLong(!bad);
done:
    PyBuffer_Release(&p); PyBuffer_Release(&lab); PyBuffer_Release(&counts);
    return result;
}

static PyMethodDef methods[] = {
    {"hist_tf", hist_tf, METH_VARARGS, "Fused TensorFlow-bin histogram of float32 data."},
    {"pr_binary", pr_binary, METH_VARARGS, "PR-curve bucket counts for 0/1 labels."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gpulog._native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
