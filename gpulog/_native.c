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
 * Both split the input across nthreads POSIX threads with private counters, and release the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N_CELLS 32768
#define CELL_SHIFT 17
#define MAX_THREADS 16

typedef struct {
    const float *x; Py_ssize_t n;
    const int32_t *base; const float *thr;
    int64_t *counts; Py_ssize_t nbins;
    double mn, mx, sum, sumsq; int64_t nans;
} hist_job;

/* Four independent lanes: separate sub-histograms and accumulators break the store-to-load and
 * floating-point-add dependency chains that otherwise bound the loop at ~4 cycles per element. */
#define LANES 4

static void *hist_worker(void *arg) {
    hist_job *j = (hist_job *)arg;
    const Py_ssize_t nb = j->nbins;
    int64_t *sub = calloc((size_t)LANES * (size_t)nb, sizeof(int64_t));
    double mn[LANES], mx[LANES], s[LANES], ss[LANES];
    int64_t nans = 0;
    for (int l = 0; l < LANES; l++) { mn[l] = INFINITY; mx[l] = -INFINITY; s[l] = 0.0; ss[l] = 0.0; }
    if (!sub) { j->nans = -1; return NULL; }
    Py_ssize_t i = 0;
    for (; i + LANES <= j->n; i += LANES) {
        for (int l = 0; l < LANES; l++) {
            float v = j->x[i + l];
            uint32_t bits;
            memcpy(&bits, &v, sizeof bits);
            uint32_t cell = (bits >> CELL_SHIFT) & (N_CELLS - 1);
            int32_t b = j->base[cell] + (v >= j->thr[cell]);
            if (b >= 0 && b < nb) sub[(size_t)l * nb + b]++;
            double d = (double)v;
            if (v != v) nans++;
            else { mn[l] = d < mn[l] ? d : mn[l]; mx[l] = d > mx[l] ? d : mx[l]; }
            s[l] += d;
            ss[l] += d * d;
        }
    }
    for (; i < j->n; i++) {  /* tail, lane 0 */
        float v = j->x[i];
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        uint32_t cell = (bits >> CELL_SHIFT) & (N_CELLS - 1);
        int32_t b = j->base[cell] + (v >= j->thr[cell]);
        if (b >= 0 && b < nb) sub[b]++;
        double d = (double)v;
        if (v != v) nans++;
        else { mn[0] = d < mn[0] ? d : mn[0]; mx[0] = d > mx[0] ? d : mx[0]; }
        s[0] += d;
        ss[0] += d * d;
    }
    for (Py_ssize_t b = 0; b < nb; b++)
        for (int l = 0; l < LANES; l++) j->counts[b] += sub[(size_t)l * nb + b];
    free(sub);
    j->mn = mn[0]; j->mx = mx[0]; j->sum = 0.0; j->sumsq = 0.0;
    for (int l = 0; l < LANES; l++) {
        if (mn[l] < j->mn) j->mn = mn[l];
        if (mx[l] > j->mx) j->mx = mx[l];
        j->sum += s[l];
        j->sumsq += ss[l];
    }
    j->nans = nans;
    return NULL;
}

typedef struct {
    const float *p; const char *lab; Py_ssize_t lsize; Py_ssize_t n; int64_t *counts; int t; int bad;
} pr_job;

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
    const float scale = (float)(j->t - 1);
    const float top = (float)(j->t - 1);
    for (Py_ssize_t i = 0; i < j->n; i++) {
        int64_t label = read_label(j->lab, j->lsize, i);
        if (label != 0 && label != 1) { j->bad = 1; return NULL; }
        float k = floorf(j->p[i] * scale);
        if (k >= 0.0f && k <= top) j->counts[2 * (int64_t)k + label]++;
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
    Py_ssize_t n = x.len / 4, nbins = counts.len / 8;
    nthreads = clamp_threads(nthreads, n);
    hist_job jobs[MAX_THREADS];
    int64_t *priv = calloc((size_t)nthreads * (size_t)nbins, sizeof(int64_t));
    if (!priv) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    pthread_t tid[MAX_THREADS];
    Py_ssize_t per = (n + nthreads - 1) / nthreads;
    for (int t = 0; t < nthreads; t++) {
        Py_ssize_t lo = t * per, hi = lo + per < n ? lo + per : n;
        jobs[t] = (hist_job){(const float *)x.buf + lo, hi > lo ? hi - lo : 0, (const int32_t *)base.buf,
                             (const float *)thr.buf, priv + (size_t)t * nbins, nbins, 0, 0, 0, 0, 0};
        if (t > 0) pthread_create(&tid[t], NULL, hist_worker, &jobs[t]);
    }
    hist_worker(&jobs[0]);
    for (int t = 1; t < nthreads; t++) pthread_join(tid[t], NULL);
    int64_t *out = (int64_t *)counts.buf;
    for (int t = 0; t < nthreads; t++)
        for (Py_ssize_t b = 0; b < nbins; b++) out[b] += priv[(size_t)t * nbins + b];
    Py_END_ALLOW_THREADS
    free(priv);
    double mn = INFINITY, mx = -INFINITY, s = 0.0, ss = 0.0;
    long long nans = 0;
    for (int t = 0; t < nthreads; t++) {
        if (jobs[t].nans < 0) { PyErr_NoMemory(); goto done; }
        if (jobs[t].mn < mn) mn = jobs[t].mn;
        if (jobs[t].mx > mx) mx = jobs[t].mx;
        s += jobs[t].sum; ss += jobs[t].sumsq; nans += jobs[t].nans;
    }
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
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_t tid[MAX_THREADS];
    Py_ssize_t per = (n + nthreads - 1) / nthreads;
    for (int t = 0; t < nthreads; t++) {
        Py_ssize_t lo = t * per, hi = lo + per < n ? lo + per : n;
        jobs[t] = (pr_job){(const float *)p.buf + lo, (const char *)lab.buf + lo * lsize, lsize,
                           hi > lo ? hi - lo : 0, priv + (size_t)t * 2 * t_count, t_count, 0};
        if (t > 0) pthread_create(&tid[t], NULL, pr_worker, &jobs[t]);
    }
    pr_worker(&jobs[0]);
    for (int t = 1; t < nthreads; t++) pthread_join(tid[t], NULL);
    for (int t = 0; t < nthreads; t++) bad |= jobs[t].bad;
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
