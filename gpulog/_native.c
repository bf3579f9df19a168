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
 * scan_scalars(data, check_crc, others=None) -> (tags, tag_ids, steps, values, problems, consumed)
 *   others: a list to which the payload of every valid event holding anything but scalars
 *   (another Event field, a non-scalar value) is appended, for the Python decoder (gpulog
 *   inspect reads a log dir this way: only those events are decoded in Python).
 *   data: a stretch of an event file starting at a record boundary; ``consumed`` is where the
 *   first incomplete record starts (the caller continues from there with more data).  Reads TFRecords (masked CRC-32C checked when check_crc)
 *   and, in each Event, every Summary.Value that is a scalar: simple_value, or a new-style
 *   scalar (plugin "scalars": a one-element DT_FLOAT/DT_DOUBLE tensor).  Returns the distinct
 *   tags (str, first-seen order), then per scalar its tag index (int32), step (int64) and value
 *   (float64) as bytes for numpy, and problems [(offset, kind)]: kind 0 = damaged length (the
 *   scan stops there), 1 = data CRC mismatch (record skipped), 2 = not a valid event (skipped).
 *   A truncated last record ends the scan silently.  The same rules as gpulog/reader.py, which
 *   is the fallback and the reference in tests.  Holds the GIL: it creates Python strings.
 *
 * frame_scalars(items, start, stop) -> list of bytes
 *   items: a sequence of the writer's scalar items (sink, tag, value, step, wall) with steps
 *   None or int; for items[start:stop] each framed TFRecord of
 *   Event{wall_time, step, summary{value{tag, simple_value}}}, byte for byte what
 *   gpulog/_encode/scalar.py's scalar_event + _record.frame produce (tests/test_wire.py).
 *   Values beyond float32 become +-inf, as protobuf stores them.
 *
 * drain_scalars(first, items, popleft, key, limit) -> (bytes, count)
 *   The writer's hot loop: ``first`` and the scalar items of the same sink key that follow it at
 *   the head of the deque ``items`` (popped with ``popleft``), at most ``limit``, framed as
 *   frame_scalars frames them, joined into one bytes (whole records, in order).
 *
 * watch_stats(arrays, codes, out, nthreads) -> None
 *   arrays: a list of 1-D buffers, codes: one char per array ('f' float32, 'd' float64, 'e'
 *   float16 and 'b' bfloat16, both passed as 2-byte integers); out: float64[len(arrays) * 8],
 *   filled per array with (count, sum, sum_squares, nonfinite, zeros, max, absmax, min) over
 *   its finite values (max/absmax -inf and min +inf when there are none), sums in double in
 *   element order: gpulog/_reduce/watch.py's contract (its reduce_torch is the reference).
 *   Releases the GIL; nthreads is accepted for symmetry and ignored (one pass on this thread).
 *
 * hist_tf and pr_binary run on the calling thread plus up to nthreads-1 helper POSIX threads with private counters,
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

/* ---- scan_scalars ------------------------------------------------------------------------ */
static uint32_t crc_table[8][256];
static int crc_ready = 0;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (uint32_t i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    crc_ready = 1;
}

static uint32_t crc32c(const uint8_t *p, Py_ssize_t n) {  /* slicing-by-8 */
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
            crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
            crc_table[0][p[7]];
        p += 8; n -= 8;
    }
    while (n--) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u; }

static uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* A protobuf varint at *p (< end); returns 0 on a malformed or truncated one. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return 0;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) { *out = v; return 1; }
    }
    return 0;
}

/* Skip one field of wire type wt; 0 if malformed. */
static int skip_field(const uint8_t **p, const uint8_t *end, int wt) {
    uint64_t n;
    switch (wt) {
        case 0: return varint(p, end, &n);
        case 1: if (end - *p < 8) return 0; *p += 8; return 1;
        case 2: if (!varint(p, end, &n) || (uint64_t)(end - *p) < n) return 0; *p += n; return 1;
        case 5: if (end - *p < 4) return 0; *p += 4; return 1;
        default: return 0;
    }
}

/* Sub-message or bytes field: [*start, *stop). */
static int len_field(const uint8_t **p, const uint8_t *end, const uint8_t **start, const uint8_t **stop) {
    uint64_t n;
    if (!varint(p, end, &n) || (uint64_t)(end - *p) < n) return 0;
    *start = *p; *stop = *p + n; *p += n;
    return 1;
}

/* The value of a new-style scalar tensor (TensorProto), or 0 if it is not one. */
static int tensor_scalar(const uint8_t *p, const uint8_t *end, double *out) {
    uint64_t key, dtype = 0;
    const uint8_t *a, *b;
    int have = 0; double v = 0;
    while (p < end) {
        if (!varint(&p, end, &key)) return 0;
        int f = (int)(key >> 3), wt = (int)(key & 7);
        if (f == 1 && wt == 0) { if (!varint(&p, end, &dtype)) return 0; }
        else if (f == 5 && wt == 2) { if (!len_field(&p, end, &a, &b)) return 0;
            if (b - a >= 4) { float x; memcpy(&x, a, 4); v = x; have = 1; } }
        else if (f == 5 && wt == 5) { if (end - p < 4) return 0; float x; memcpy(&x, p, 4); p += 4; v = x; have = 1; }
        else if (f == 6 && wt == 2) { if (!len_field(&p, end, &a, &b)) return 0;
            if (b - a >= 8) { memcpy(&v, a, 8); have = 1; } }
        else if (f == 6 && wt == 1) { if (end - p < 8) return 0; memcpy(&v, p, 8); p += 8; have = 1; }
        else if (f == 4 && wt == 2) { if (!len_field(&p, end, &a, &b)) return 0;
            if (b - a >= 8 && dtype == 2) { memcpy(&v, a, 8); have = 1; }
            else if (b - a >= 4) { float x; memcpy(&x, a, 4); v = x; have = 1; } }
        else if (!skip_field(&p, end, wt)) return 0;
    }
    if (!have || (dtype != 1 && dtype != 2)) return 0;
    *out = v;
    return 1;
}

static int is_scalars_plugin(const uint8_t *p, const uint8_t *end) {  /* SummaryMetadata */
    uint64_t key;
    const uint8_t *a, *b, *c, *d;
    while (p < end) {
        if (!varint(&p, end, &key)) return 0;
        if ((key >> 3) == 1 && (key & 7) == 2) {  /* plugin_data */
            if (!len_field(&p, end, &a, &b)) return 0;
            while (a < b) {
                if (!varint(&a, b, &key)) return 0;
                if ((key >> 3) == 1 && (key & 7) == 2) {
                    if (!len_field(&a, b, &c, &d)) return 0;
                    return d - c == 7 && memcmp(c, "scalars", 7) == 0;
                }
                if (!skip_field(&a, b, (int)(key & 7))) return 0;
            }
        } else if (!skip_field(&p, end, (int)(key & 7))) return 0;
    }
    return 0;
}

typedef struct { int32_t *tag; int64_t *step; double *val; Py_ssize_t n, cap; } scalars_out;

static int push(scalars_out *o, int32_t tag, int64_t step, double v) {
    if (o->n == o->cap) {
        Py_ssize_t cap = o->cap ? o->cap * 2 : 1024;
        int32_t *t = realloc(o->tag, cap * sizeof *t);
        if (t) o->tag = t;
        int64_t *s = realloc(o->step, cap * sizeof *s);
        if (s) o->step = s;
        double *v2 = realloc(o->val, cap * sizeof *v2);
        if (v2) o->val = v2;
        if (!t || !s || !v2) return 0;
        o->cap = cap;
    }
    o->tag[o->n] = tag; o->step[o->n] = step; o->val[o->n] = v; o->n++;
    return 1;
}

/* One Event: its scalars appended (tags interned in `tags`); 0 = not a valid event, -1 = error.
 * *other is set when the event holds anything else (another field than wall_time, step and
 * summary, or a summary value that is not a scalar). */
static int scan_event(const uint8_t *p, const uint8_t *end, PyObject *tags, PyObject *index, scalars_out *o,
                      int *other) {
    uint64_t key, step = 0;
    const uint8_t *sum_a = NULL, *sum_b = NULL, *a, *b;
    while (p < end) {
        if (!varint(&p, end, &key)) return 0;
        int f = (int)(key >> 3), wt = (int)(key & 7);
        if (f == 2 && wt == 0) { if (!varint(&p, end, &step)) return 0; }
        else if (f == 5 && wt == 2) { if (!len_field(&p, end, &sum_a, &sum_b)) return 0; }
        else { if (f != 1) *other = 1; if (!skip_field(&p, end, wt)) return 0; }
    }
    if (!sum_a) return 1;
    Py_ssize_t mark = o->n;
    p = sum_a;
    while (p < sum_b) {
        if (!varint(&p, sum_b, &key)) goto bad;
        if ((key >> 3) != 1 || (key & 7) != 2) { if (!skip_field(&p, sum_b, (int)(key & 7))) goto bad; continue; }
        if (!len_field(&p, sum_b, &a, &b)) goto bad;
        const uint8_t *tag_a = NULL, *tag_b = NULL, *ten_a = NULL, *ten_b = NULL, *md_a = NULL, *md_b = NULL;
        int simple = 0; double v = 0;
        while (a < b) {
            uint64_t k2;
            if (!varint(&a, b, &k2)) goto bad;
            int f2 = (int)(k2 >> 3), w2 = (int)(k2 & 7);
            if (f2 == 1 && w2 == 2) { if (!len_field(&a, b, &tag_a, &tag_b)) goto bad; }
            else if (f2 == 2 && w2 == 5) { if (b - a < 4) goto bad; float x; memcpy(&x, a, 4); a += 4; v = x; simple = 1; }
            else if (f2 == 8 && w2 == 2) { if (!len_field(&a, b, &ten_a, &ten_b)) goto bad; }
            else if (f2 == 9 && w2 == 2) { if (!len_field(&a, b, &md_a, &md_b)) goto bad; }
            else if (!skip_field(&a, b, w2)) goto bad;
        }
        int is_scalar = simple;
        if (!simple && ten_a && md_a && is_scalars_plugin(md_a, md_b) && tensor_scalar(ten_a, ten_b, &v))
            is_scalar = 1;
        if (!is_scalar) { *other = 1; continue; }
        PyObject *t = PyUnicode_DecodeUTF8((const char *)(tag_a ? tag_a : (const uint8_t *)""),
                                           tag_a ? tag_b - tag_a : 0, "strict");
        if (!t) { PyErr_Clear(); goto bad; }
        PyObject *id = PyDict_GetItemWithError(index, t);
        long tid;
        if (id) tid = PyLong_AsLong(id);
        else {
            if (PyErr_Occurred()) { Py_DECREF(t); return -1; }
            tid = (long)PyList_GET_SIZE(tags);
            PyObject *num = PyLong_FromLong(tid);
            if (!num || PyDict_SetItem(index, t, num) < 0 || PyList_Append(tags, t) < 0) {
                Py_XDECREF(num); Py_DECREF(t); return -1;
            }
            Py_DECREF(num);
        }
        Py_DECREF(t);
        if (!push(o, (int32_t)tid, (int64_t)step, v)) { PyErr_NoMemory(); return -1; }
    }
    return 1;
bad:
    o->n = mark;  /* as the Python reader: a record that does not decode contributes nothing */
    return 0;
}

/* The record framed at data[pos:] (of n bytes): REC_END when no whole record is left (a torn
 * last one ends the file silently; so does a length whose CRC fails, nothing after it can be
 * found: (pos, 0) is appended to problems), REC_BAD_DATA when its data CRC fails (skip it: its
 * length was intact), else REC_OK; -1 with an error set.  *len is its payload length.  len + 4
 * is never computed: without the CRC check a damaged length near 2**64 would wrap and be taken
 * for a record. */
enum { REC_END, REC_BAD_DATA, REC_OK };

static int add_problem(PyObject *problems, Py_ssize_t pos, int kind);

static int next_record(const uint8_t *data, Py_ssize_t n, Py_ssize_t pos, int check, uint64_t *len,
                       PyObject *problems) {
    if (n - pos < 12) return REC_END;
    *len = le64(data + pos);
    if (check && le32(data + pos + 8) != masked(crc32c(data + pos, 8)))
        return add_problem(problems, pos, 0) < 0 ? -1 : REC_END;
    uint64_t avail = (uint64_t)(n - pos - 12);
    if (avail < 4 || *len > avail - 4) return REC_END;
    const uint8_t *payload = data + pos + 12;
    if (check && le32(payload + *len) != masked(crc32c(payload, (Py_ssize_t)*len))) return REC_BAD_DATA;
    return REC_OK;
}

/* problems.append((pos, kind)); -1 with an error set on failure */
static int add_problem(PyObject *problems, Py_ssize_t pos, int kind) {
    PyObject *pr = Py_BuildValue("(ni)", pos, kind);
    if (!pr || PyList_Append(problems, pr) < 0) { Py_XDECREF(pr); return -1; }
    Py_DECREF(pr);
    return 0;
}

static PyObject *scan_scalars(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int check = 1;
    PyObject *others = Py_None;
    if (!PyArg_ParseTuple(args, "y*|pO", &buf, &check, &others)) return NULL;
    if (others != Py_None && !PyList_Check(others)) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_TypeError, "others must be a list or None");
        return NULL;
    }
    if (!crc_ready) crc_init();
    const uint8_t *data = buf.buf;
    Py_ssize_t n = buf.len, pos = 0;
    PyObject *tags = PyList_New(0), *index = PyDict_New(), *problems = PyList_New(0), *result = NULL;
    scalars_out o = {0};
    if (!tags || !index || !problems) goto done;
    for (;;) {
        uint64_t len;
        int rec = next_record(data, n, pos, check, &len, problems);
        if (rec < 0) goto done;
        if (rec == REC_END) break;
        const uint8_t *payload = data + pos + 12;
        int kind = -1;
        if (rec == REC_BAD_DATA) kind = 1;
        else {
            int other = 0;
            int r = scan_event(payload, payload + len, tags, index, &o, &other);
            if (r < 0) goto done;
            if (r == 0) kind = 2;
            else if (other && others != Py_None) {  /* the whole event, for the Python decoder */
                PyObject *ev = PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)len);
                if (!ev || PyList_Append(others, ev) < 0) { Py_XDECREF(ev); goto done; }
                Py_DECREF(ev);
            }
        }
        if (kind >= 0 && add_problem(problems, pos, kind) < 0) goto done;
        pos += 12 + (Py_ssize_t)len + 4;
    }
    result = Py_BuildValue("(Oy#y#y#On)", tags, (const char *)o.tag, o.n * (Py_ssize_t)sizeof(int32_t),
                           (const char *)o.step, o.n * (Py_ssize_t)sizeof(int64_t),
                           (const char *)o.val, o.n * (Py_ssize_t)sizeof(double), problems, pos);
done:
    free(o.tag); free(o.step); free(o.val);
    Py_XDECREF(tags); Py_XDECREF(index); Py_XDECREF(problems);
    PyBuffer_Release(&buf);
    return result;
}

/* ---- scan_events ---------------------------------------------------------------------------
 * scan_events(data, check, ctx) -> (items, others, problems, consumed)
 * ctx = (Event, Value, event_defaults, value_defaults, Tensor, tensor_value_defaults,
 *        tensor_defaults, numpy.frombuffer, dtype('<f4'), dtype('<f8'))
 * Every whole record of ``data`` in order: an ``Event`` instance for an event made only of
 * wall_time, step and a summary of scalars — simple_value, or new-style (a float or double
 * tensor of shape [] with the "scalars" plugin) — each field once (the common records), built
 * here with the attributes and values the Python decoder gives them (its dataclasses' defaults,
 * passed in); else ``(offset, payload)`` for the Python decoder, which knows every other field
 * and reports what does not decode (``others`` counts them).  ``problems`` as scan_scalars
 * (kinds 0 and 1 only: validity is the decoder's to judge). */
static PyObject *k_wall, *k_step, *k_values, *k_tag, *k_scalar, *k_content, *k_tensor, *k_dtype, *k_shape, *k_value;

/* kind 0: simple_value v; 1/2: a float/double tensor whose 4/8 bytes are at raw */
typedef struct { const uint8_t *tag_a, *tag_b, *raw, *content_a, *content_b; int kind; float v; } simple_val;

/* SummaryMetadata{plugin_data{plugin_name: "scalars", content?}}, each field once */
static int scalars_metadata(const uint8_t *p, const uint8_t *end, simple_val *v) {
    uint64_t key;
    const uint8_t *a = NULL, *b = NULL, *name_a = NULL, *name_b = NULL;
    while (p < end) {
        if (!varint(&p, end, &key) || key != ((1 << 3) | 2) || a) return 0;
        if (!len_field(&p, end, &a, &b)) return 0;
    }
    if (!a) return 0;
    while (a < b) {
        if (!varint(&a, b, &key)) return 0;
        if (key == ((1 << 3) | 2) && !name_a) { if (!len_field(&a, b, &name_a, &name_b)) return 0; }
        else if (key == ((2 << 3) | 2) && !v->content_a) { if (!len_field(&a, b, &v->content_a, &v->content_b)) return 0; }
        else return 0;
    }
    return name_a && name_b - name_a == 7 && memcmp(name_a, "scalars", 7) == 0;
}

/* TensorProto{dtype: DT_FLOAT|DT_DOUBLE, tensor_shape{}?, float_val|double_val: one packed value} */
static int scalar_tensor(const uint8_t *p, const uint8_t *end, simple_val *v) {
    uint64_t key, dtype = 0;
    const uint8_t *a, *b, *f4 = NULL, *f8 = NULL;
    int seen_dtype = 0, seen_shape = 0;
    while (p < end) {
        if (!varint(&p, end, &key)) return 0;
        if (key == ((1 << 3) | 0) && !seen_dtype) { if (!varint(&p, end, &dtype)) return 0; seen_dtype = 1; }
        else if (key == ((2 << 3) | 2) && !seen_shape) { if (!len_field(&p, end, &a, &b) || a != b) return 0; seen_shape = 1; }
        else if (key == ((5 << 3) | 2) && !f4) { if (!len_field(&p, end, &a, &b) || b - a != 4) return 0; f4 = a; }
        else if (key == ((6 << 3) | 2) && !f8) { if (!len_field(&p, end, &a, &b) || b - a != 8) return 0; f8 = a; }
        else return 0;
    }
    if (dtype == 1 && f4 && !f8) { v->kind = 1; v->raw = f4; return 1; }
    if (dtype == 2 && f8 && !f4) { v->kind = 2; v->raw = f8; return 1; }
    return 0;
}

/* 1 and the event's fields when the event is a plain scalar event, else 0. */
static int simple_event(const uint8_t *p, const uint8_t *end, double *wall, int64_t *step,
                        simple_val *vals, Py_ssize_t max_vals, Py_ssize_t *nvals) {
    uint64_t key, st = 0;
    const uint8_t *sum_a = NULL, *sum_b = NULL, *a, *b;
    int seen_wall = 0, seen_step = 0;
    *wall = 0.0;
    while (p < end) {
        if (!varint(&p, end, &key)) return 0;
        int f = (int)(key >> 3), wt = (int)(key & 7);
        if (f == 1 && wt == 1 && !seen_wall) { if (end - p < 8) return 0; memcpy(wall, p, 8); p += 8; seen_wall = 1; }
        else if (f == 2 && wt == 0 && !seen_step) { if (!varint(&p, end, &st)) return 0; seen_step = 1; }
        else if (f == 5 && wt == 2 && !sum_a) { if (!len_field(&p, end, &sum_a, &sum_b)) return 0; }
        else return 0;
    }
    if (!sum_a) return 0;  /* no summary: file_version, graphs, session logs: the decoder's */
    *step = (int64_t)st;
    Py_ssize_t n = 0;
    p = sum_a;
    while (p < sum_b) {
        if (!varint(&p, sum_b, &key) || key != ((1 << 3) | 2)) return 0;
        if (!len_field(&p, sum_b, &a, &b) || n == max_vals) return 0;
        simple_val *v = &vals[n++];
        memset(v, 0, sizeof *v);
        const uint8_t *ten_a = NULL, *ten_b = NULL, *md_a = NULL, *md_b = NULL;
        int seen_v = 0;
        while (a < b) {
            uint64_t k2;
            if (!varint(&a, b, &k2)) return 0;
            if (k2 == ((1 << 3) | 2) && !v->tag_a) { if (!len_field(&a, b, &v->tag_a, &v->tag_b)) return 0; }
            else if (k2 == ((2 << 3) | 5) && !seen_v) { if (b - a < 4) return 0; memcpy(&v->v, a, 4); a += 4; seen_v = 1; }
            else if (k2 == ((8 << 3) | 2) && !ten_a) { if (!len_field(&a, b, &ten_a, &ten_b)) return 0; }
            else if (k2 == ((9 << 3) | 2) && !md_a) { if (!len_field(&a, b, &md_a, &md_b)) return 0; }
            else return 0;
        }
        if (seen_v) { if (ten_a || md_a) return 0; }
        else if (!ten_a || !md_a || !scalar_tensor(ten_a, ten_b, v) || !scalars_metadata(md_a, md_b, v)) return 0;
    }
    *nvals = n;
    return 1;
}

#define TAG_CACHE_LEN 256
typedef struct { PyObject *tags; PyObject *last; char bytes[TAG_CACHE_LEN]; Py_ssize_t len; } tag_cache;

typedef struct {
    PyObject *ev_cls, *val_cls, *ev_def, *val_def, *tensor_cls, *tval_def, *tensor_def, *frombuffer, *f4, *f8;
} event_ctx;

/* An instance of ``cls`` with the attributes of ``defaults`` set in its order (the order the
 * dataclass's __init__ sets them, so instances share its attribute layout), three of them
 * replaced (k1..k3, by identity: interned names). */
static PyObject *new_instance(PyObject *cls, PyObject *defaults, PyObject *k1, PyObject *v1,
                              PyObject *k2, PyObject *v2, PyObject *k3, PyObject *v3) {
    static PyObject *no_args;
    if (!no_args && !(no_args = PyTuple_New(0))) return NULL;
    /* object.__new__ (not a bare tp_alloc): on 3.11+ it prepares the inline attribute values,
     * so no per-instance dict is made */
    PyObject *obj = PyBaseObject_Type.tp_new((PyTypeObject *)cls, no_args, NULL), *key, *value;
    if (!obj) return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(defaults, &pos, &key, &value)) {
        PyObject *v = key == k1 ? v1 : key == k2 ? v2 : key == k3 ? v3 : value;
        if (PyObject_GenericSetAttr(obj, key, v) < 0) { Py_DECREF(obj); return NULL; }
    }
    return obj;
}

/* The tag as a str (borrowed, owned by the cache): the last one is compared byte for byte. */
static PyObject *cached_tag(tag_cache *cache, const simple_val *v) {
    Py_ssize_t tl = v->tag_a ? v->tag_b - v->tag_a : 0;
    const char *ts = tl ? (const char *)v->tag_a : "";
    if (cache->last && cache->len == tl && memcmp(cache->bytes, ts, (size_t)tl) == 0) return cache->last;
    PyObject *raw = PyBytes_FromStringAndSize(ts, tl);
    if (!raw) return NULL;
    PyObject *tag = PyDict_GetItemWithError(cache->tags, raw);
    if (!tag) {
        if (PyErr_Occurred()) { Py_DECREF(raw); return NULL; }
        PyObject *t = PyUnicode_DecodeUTF8(ts, tl, "strict");
        if (!t || PyDict_SetItem(cache->tags, raw, t) < 0) { Py_XDECREF(t); Py_DECREF(raw); return NULL; }
        Py_DECREF(t);
        tag = t;
    }
    Py_DECREF(raw);
    cache->last = NULL;
    if (tl <= TAG_CACHE_LEN) { memcpy(cache->bytes, ts, (size_t)tl); cache->len = tl; cache->last = tag; }
    return tag;
}

static PyObject *build_value(const event_ctx *c, tag_cache *cache, const simple_val *v) {
    PyObject *tag = cached_tag(cache, v);
    if (!tag) return NULL;
    if (v->kind == 0) {
        PyObject *vf = PyFloat_FromDouble((double)v->v);
        PyObject *vo = vf ? new_instance(c->val_cls, c->val_def, k_tag, tag, k_scalar, vf, NULL, NULL) : NULL;
        Py_XDECREF(vf);
        return vo;
    }
    /* as parse_tensor: Tensor(dtype, [], numpy.frombuffer(<the value's bytes>, '<f4' | '<f8')) */
    PyObject *raw = PyBytes_FromStringAndSize((const char *)v->raw, v->kind == 1 ? 4 : 8);
    PyObject *arr = raw ? PyObject_CallFunctionObjArgs(c->frombuffer, raw, v->kind == 1 ? c->f4 : c->f8, NULL) : NULL;
    PyObject *dtype = PyLong_FromLong(v->kind);
    PyObject *shape = PyList_New(0);
    PyObject *ten = arr && dtype && shape ? new_instance(c->tensor_cls, c->tensor_def, k_dtype, dtype, k_shape, shape,
                                                         k_value, arr) : NULL;
    Py_XDECREF(raw); Py_XDECREF(arr); Py_XDECREF(dtype); Py_XDECREF(shape);
    if (!ten) return NULL;
    Py_ssize_t cl = v->content_a ? v->content_b - v->content_a : 0;
    PyObject *content = PyBytes_FromStringAndSize(cl ? (const char *)v->content_a : "", cl);
    PyObject *vo = content ? new_instance(c->val_cls, c->tval_def, k_tag, tag, k_content, content, k_tensor, ten) : NULL;
    Py_XDECREF(content); Py_DECREF(ten);
    return vo;
}

static PyObject *build_event(const event_ctx *c, tag_cache *cache, double wall, int64_t step,
                             const simple_val *vals, Py_ssize_t n) {
    PyObject *list = PyList_New(n), *ev = NULL, *d = NULL, *x = NULL;
    if (!list) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *vo = build_value(c, cache, &vals[i]);
        if (!vo) goto fail;
        PyList_SET_ITEM(list, i, vo);
    }
    d = PyFloat_FromDouble(wall);
    x = PyLong_FromLongLong(step);
    if (!d || !x) goto fail;
    ev = new_instance(c->ev_cls, c->ev_def, k_wall, d, k_step, x, k_values, list);
    Py_CLEAR(d); Py_CLEAR(x);
    if (!ev) goto fail;
    Py_DECREF(list);
    return ev;
fail:
    Py_XDECREF(x); Py_XDECREF(d); Py_XDECREF(ev); Py_DECREF(list);
    return NULL;
}

static PyObject *scan_events(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int check;
    PyObject *ctx_obj;
    event_ctx c;
    if (!PyArg_ParseTuple(args, "y*pO!", &buf, &check, &PyTuple_Type, &ctx_obj)) return NULL;
    if (!PyArg_ParseTuple(ctx_obj, "O!O!O!O!O!O!O!OOO", &PyType_Type, &c.ev_cls, &PyType_Type, &c.val_cls,
                          &PyDict_Type, &c.ev_def, &PyDict_Type, &c.val_def, &PyType_Type, &c.tensor_cls,
                          &PyDict_Type, &c.tval_def, &PyDict_Type, &c.tensor_def, &c.frombuffer, &c.f4, &c.f8)) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (!k_wall) {
        k_wall = PyUnicode_InternFromString("wall_time"); k_step = PyUnicode_InternFromString("step");
        k_values = PyUnicode_InternFromString("values"); k_tag = PyUnicode_InternFromString("tag");
        k_scalar = PyUnicode_InternFromString("scalar"); k_content = PyUnicode_InternFromString("plugin_content");
        k_tensor = PyUnicode_InternFromString("tensor"); k_dtype = PyUnicode_InternFromString("dtype");
        k_shape = PyUnicode_InternFromString("shape"); k_value = PyUnicode_InternFromString("value");
        if (!k_wall || !k_step || !k_values || !k_tag || !k_scalar || !k_content || !k_tensor || !k_dtype ||
            !k_shape || !k_value) { PyBuffer_Release(&buf); return NULL; }
    }
    if (!crc_ready) crc_init();
    const uint8_t *data = buf.buf;
    Py_ssize_t n = buf.len, pos = 0, others = 0;
    PyObject *items = PyList_New(0), *problems = PyList_New(0), *result = NULL;
    tag_cache cache = {PyDict_New(), NULL, {0}, 0};
    simple_val vals[64];
    /* Only new objects without cycles are made here (three or more an event): the collector would
     * walk the growing heap again and again while they are made, so it waits until the end. */
#if PY_VERSION_HEX >= 0x030A0000
    int gc_was = PyGC_Disable();
#endif
    if (!items || !problems || !cache.tags) goto done;
    for (;;) {
        uint64_t len;
        int rec = next_record(data, n, pos, check, &len, problems);
        if (rec < 0) goto done;
        if (rec == REC_END) break;
        const uint8_t *payload = data + pos + 12;
        PyObject *it = NULL;
        if (rec == REC_BAD_DATA) {
            if (add_problem(problems, pos, 1) < 0) goto done;
            pos += 12 + (Py_ssize_t)len + 4;
            continue;
        }
        double wall; int64_t step; Py_ssize_t nv;
        if (simple_event(payload, payload + len, &wall, &step, vals, 64, &nv)) {
            it = build_event(&c, &cache, wall, step, vals, nv);
            if (!it && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();  /* the decoder says why */
            else if (!it) goto done;
        }
        if (!it) { it = Py_BuildValue("(ny#)", pos, (const char *)payload, (Py_ssize_t)len); others++; }
        if (!it || PyList_Append(items, it) < 0) { Py_XDECREF(it); goto done; }
        Py_DECREF(it);
        pos += 12 + (Py_ssize_t)len + 4;
    }
    result = Py_BuildValue("(OnOn)", items, others, problems, pos);
done:
#if PY_VERSION_HEX >= 0x030A0000
    if (gc_was) PyGC_Enable();
#endif
    Py_XDECREF(items); Py_XDECREF(problems); Py_XDECREF(cache.tags);
    PyBuffer_Release(&buf);
    return result;
}

/* ---- frame_scalars ------------------------------------------------------------------------ */
static Py_ssize_t put_varint(uint8_t *out, uint64_t v) {
    Py_ssize_t n = 0;
    while (v >= 0x80) { out[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    out[n++] = (uint8_t)v;
    return n;
}

/* One framed TFRecord of Event{wall_time, step, summary{value{tag, simple_value}}} for a scalar
 * item (key, tag, value, step, wall), appended to the growable buffer (*buf, *len, *cap).
 * Returns 0, or -1 with a Python error set. */
static int frame_record(PyObject *it, uint8_t **buf, Py_ssize_t *len, Py_ssize_t *cap) {
    if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 5) {
        PyErr_SetString(PyExc_TypeError, "a scalar item is a 5-tuple");
        return -1;
    }
    Py_ssize_t tag_len;
    const char *tag = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(it, 1), &tag_len);
    if (!tag) return -1;
    double value = PyFloat_AsDouble(PyTuple_GET_ITEM(it, 2));
    if (value == -1.0 && PyErr_Occurred()) return -1;
    PyObject *step_obj = PyTuple_GET_ITEM(it, 3);
    int64_t step = 0;
    if (step_obj != Py_None) {
        step = PyLong_AsLongLong(step_obj);
        if (step == -1 && PyErr_Occurred()) return -1;
    }
    double wall = PyFloat_AsDouble(PyTuple_GET_ITEM(it, 4));
    if (wall == -1.0 && PyErr_Occurred()) return -1;
    float f = (float)value;  /* beyond float32: +-inf, as protobuf stores it */
    /* Value{1: tag, 2: float} */
    uint8_t lenbuf[10];
    Py_ssize_t tl = put_varint(lenbuf, (uint64_t)tag_len);
    Py_ssize_t val_len = (tag_len ? 1 + tl + tag_len : 0) + 5;  /* "" is proto3's default: omitted */
    Py_ssize_t vl = put_varint(lenbuf, (uint64_t)val_len);
    Py_ssize_t sum_len = 1 + vl + val_len;
    Py_ssize_t sl = put_varint(lenbuf, (uint64_t)sum_len);
    uint8_t stepbuf[10];
    Py_ssize_t stl = step != 0 ? put_varint(stepbuf, (uint64_t)step) : 0;
    Py_ssize_t ev_len = (wall != 0.0 ? 9 : 0) + (step != 0 ? 1 + stl : 0) + 1 + sl + sum_len;
    Py_ssize_t total = 12 + ev_len + 4;
    if (*len + total > *cap) {
        Py_ssize_t want = *cap ? *cap * 2 : 4096;
        while (want < *len + total) want *= 2;
        uint8_t *grown = realloc(*buf, (size_t)want);
        if (!grown) { PyErr_NoMemory(); return -1; }
        *buf = grown; *cap = want;
    }
    uint8_t *rec = *buf + *len;
    uint8_t *p = rec + 12;
    if (wall != 0.0) { *p++ = 0x09; memcpy(p, &wall, 8); p += 8; }
    if (step != 0) { *p++ = 0x10; memcpy(p, stepbuf, (size_t)stl); p += stl; }
    *p++ = 0x2a; p += put_varint(p, (uint64_t)sum_len);
    *p++ = 0x0a; p += put_varint(p, (uint64_t)val_len);
    if (tag_len) { *p++ = 0x0a; p += put_varint(p, (uint64_t)tag_len); memcpy(p, tag, (size_t)tag_len); p += tag_len; }
    *p++ = 0x15; memcpy(p, &f, 4); p += 4;
    uint64_t n64 = (uint64_t)ev_len;
    memcpy(rec, &n64, 8);
    uint32_t c1 = masked(crc32c(rec, 8)), c2 = masked(crc32c(rec + 12, ev_len));
    memcpy(rec + 8, &c1, 4);
    memcpy(rec + 12 + ev_len, &c2, 4);
    *len += total;
    return 0;
}

static PyObject *frame_scalars(PyObject *self, PyObject *args) {
    PyObject *items;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "Onn", &items, &start, &stop)) return NULL;
    if (!crc_ready) crc_init();
    PyObject *seq = PySequence_Fast(items, "items must be a sequence");
    if (!seq) return NULL;
    if (stop > PySequence_Fast_GET_SIZE(seq)) stop = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(0);
    uint8_t *buf = NULL;
    Py_ssize_t cap = 0;
    for (Py_ssize_t i = start; out && i < stop; i++) {
        Py_ssize_t len = 0;
        if (frame_record(PySequence_Fast_GET_ITEM(seq, i), &buf, &len, &cap) < 0) goto fail;
        PyObject *rec = PyBytes_FromStringAndSize((const char *)buf, len);
        if (!rec || PyList_Append(out, rec) < 0) { Py_XDECREF(rec); goto fail; }
        Py_DECREF(rec);
    }
    free(buf);
    Py_DECREF(seq);
    return out;
fail:
    free(buf);
    Py_XDECREF(out);
    Py_DECREF(seq);
    return NULL;
}

/* drain_scalars(first, items, popleft, key, limit) -> (bytes, count)
 * The writer's run of scalar items for one event file, framed into one bytes object: ``first``
 * (already popped), then items[0] popped while it is a scalar item of the same ``key`` with a
 * None or int step, at most ``limit`` items in all.  Only the writer thread pops, so peeking at
 * items[0] while producers append at the other end is safe. */
static PyObject *drain_scalars(PyObject *self, PyObject *args) {
    PyObject *first, *items, *popleft;
    long long key;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOOLn", &first, &items, &popleft, &key, &limit)) return NULL;
    if (!crc_ready) crc_init();
    uint8_t *buf = NULL;
    Py_ssize_t len = 0, cap = 0, count = 0;
    if (frame_record(first, &buf, &len, &cap) < 0) { free(buf); return NULL; }
    count = 1;
    while (count < limit && PySequence_Size(items) > 0) {
        PyObject *nxt = PySequence_GetItem(items, 0);
        if (!nxt) { free(buf); return NULL; }
        int same = PyTuple_CheckExact(nxt) && PyTuple_GET_SIZE(nxt) == 5;
        if (same) {
            PyObject *k = PyTuple_GET_ITEM(nxt, 0), *st = PyTuple_GET_ITEM(nxt, 3);
            same = PyLong_CheckExact(k) && PyLong_AsLongLong(k) == key &&
                   (st == Py_None || PyLong_CheckExact(st));
            if (PyErr_Occurred()) PyErr_Clear();
        }
        Py_DECREF(nxt);
        if (!same) break;
        PyObject *it = PyObject_CallNoArgs(popleft);
        if (!it) { free(buf); return NULL; }
        int bad = frame_record(it, &buf, &len, &cap);
        Py_DECREF(it);
        if (bad < 0) { free(buf); return NULL; }
        count++;
    }
    PyObject *blob = PyBytes_FromStringAndSize((const char *)buf, len);
    free(buf);
    if (!blob) return NULL;
    return Py_BuildValue("(Nn)", blob, count);
}

/* ---- watch_stats ---------------------------------------------------------------------------- */
static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {  /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 0x1f) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f; memcpy(&f, &bits, 4); return f;
}

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16; float f; memcpy(&f, &bits, 4); return f;
}

typedef struct { const void *data; Py_ssize_t n; char code; double *out; } watch_job;

static void watch_one(watch_job *j) {
    double s = 0, ss = 0, mx = -INFINITY, amax = -INFINITY, mn = INFINITY;
    Py_ssize_t bad = 0, zeros = 0;
    for (Py_ssize_t i = 0; i < j->n; i++) {
        double x;
        switch (j->code) {
            case 'f': x = ((const float *)j->data)[i]; break;
            case 'd': x = ((const double *)j->data)[i]; break;
            case 'e': x = half_to_float(((const uint16_t *)j->data)[i]); break;
            default: x = bf16_to_float(((const uint16_t *)j->data)[i]); break;
        }
        if (!isfinite(x)) { bad++; continue; }
        s += x; ss += x * x;
        if (x == 0) zeros++;
        if (x > mx) mx = x;
        if (x < mn) mn = x;
        double a = fabs(x);
        if (a > amax) amax = a;
    }
    double *o = j->out;
    o[0] = (double)j->n; o[1] = s; o[2] = ss; o[3] = (double)bad; o[4] = (double)zeros;
    o[5] = mx; o[6] = amax; o[7] = mn;
}

static PyObject *watch_stats(PyObject *self, PyObject *args) {
    PyObject *list; const char *codes; Py_ssize_t ncodes; Py_buffer out; int nthreads;
    if (!PyArg_ParseTuple(args, "Os#w*i", &list, &codes, &ncodes, &out, &nthreads)) return NULL;
    PyObject *seq = PySequence_Fast(list, "arrays must be a sequence");
    if (!seq) { PyBuffer_Release(&out); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (ncodes != n || out.len < (Py_ssize_t)(n * 8 * sizeof(double))) {
        PyErr_SetString(PyExc_ValueError, "watch_stats: one code per array and out of 8 doubles per array");
        Py_DECREF(seq); PyBuffer_Release(&out); return NULL;
    }
    Py_buffer *views = calloc(n ? n : 1, sizeof(Py_buffer));
    watch_job *jobs = calloc(n ? n : 1, sizeof(watch_job));
    Py_ssize_t got = 0;
    PyObject *result = NULL;
    if (!views || !jobs) { PyErr_NoMemory(); goto done; }
    for (; got < n; got++) {
        char c = codes[got];
        Py_ssize_t width = c == 'f' ? 4 : c == 'd' ? 8 : (c == 'e' || c == 'b') ? 2 : 0;
        if (!width) { PyErr_Format(PyExc_ValueError, "watch_stats: unknown code %c", c); goto done; }
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_C_CONTIGUOUS) < 0) goto done;
        jobs[got].data = views[got].buf; jobs[got].n = views[got].len / width; jobs[got].code = c;
        jobs[got].out = (double *)out.buf + 8 * got;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) watch_one(&jobs[i]);
    Py_END_ALLOW_THREADS
    result = Py_None; Py_INCREF(result);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    free(views); free(jobs);
    Py_DECREF(seq); PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"hist_tf", hist_tf, METH_VARARGS, "Fused TensorFlow-bin histogram of float32 data."},
    {"pr_binary", pr_binary, METH_VARARGS, "PR-curve bucket counts for 0/1 labels."},
    {"scan_scalars", scan_scalars, METH_VARARGS, "Scalars of one event file's bytes, into arrays."},
    {"scan_events", scan_events, METH_VARARGS, "Events of one event file's bytes: simple scalar events built in C."},
    {"frame_scalars", frame_scalars, METH_VARARGS, "Framed scalar event records, one C call per batch."},
    {"drain_scalars", drain_scalars, METH_VARARGS, "A run of one file's scalar items, popped and framed into one bytes."},
    {"watch_stats", watch_stats, METH_VARARGS, "Raw moments of many tensors in one call (model watching)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gpulog._native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
