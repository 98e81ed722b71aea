/* metasr.runtime._native: the upscale stage's interleave in one pass (CPython extension, no dependencies).
 *
 * The direct paths (runtime/ort_direct.py, runtime/ort_direct_phase.py) end in convolutions whose outputs are in
 * ONNX Runtime's NCHWc layout: part i is (n, cb_i, J_r, J_c, B) floats, its channel c at block c / B, lane c % B.
 * Each output pixel of the image window takes one value of one part:
 *
 *     out[m, o, y, x] = part[pr(y) * q_c + pc(x)][m, c / B, jr(y), jc(x), c % B],
 *     c = (o * Kr(y) + kr(y)) * Kc(x) + kc(x)
 *
 * with the row table (phase, j, k, K) per output row and the column table per output column. The graph did this
 * as Concat, ReorderOutput, Gather and DepthToSpace (or ReorderOutput and Col2Im) and the host cut the window:
 * four or five passes over memory where this is one. Every index is checked against the buffers' sizes before
 * the loop (ValueError otherwise); the loop runs without the GIL. Pure data movement: the values are copied, so
 * the result is bit-identical to the graph's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_K 64

/* *out = a * b where neither is negative and the product fits, else 0 (hostile sizes never wrap). */
static int product(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *out) {
    if (a < 0 || b < 0 || (b != 0 && a > PY_SSIZE_T_MAX / b)) return 0;
    *out = a * b;
    return 1;
}

/* A private copy of an int32 table: checked once, then read by the loop, whatever happens to the caller's
 * buffer meanwhile (it may alias the output, or another thread may write it: the loop runs without the GIL). */
static int32_t *own_copy(const Py_buffer *b) {
    int32_t *copy = PyMem_Malloc(b->len > 0 ? (size_t)b->len : 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(copy, b->buf, (size_t)b->len);
    return copy;
}

typedef struct {
    Py_buffer *parts;
    Py_ssize_t nparts;
} Parts;

static void release_parts(Parts *p) {
    for (Py_ssize_t i = 0; i < p->nparts; i++) PyBuffer_Release(&p->parts[i]);
    PyMem_Free(p->parts);
    p->parts = NULL;
    p->nparts = 0;
}

static int float_buffer(Py_buffer *b, const char *what) {
    if (b->itemsize != 4 || (b->format != NULL && strcmp(b->format, "f") != 0)) {
        PyErr_Format(PyExc_ValueError, "%s: float32 expected", what);
        return -1;
    }
    return 0;
}

static int int_table(Py_buffer *b, Py_ssize_t *count, const char *what) {
    if (b->itemsize != 4 || (b->format != NULL && strcmp(b->format, "i") != 0) || b->len % 16 != 0) {
        PyErr_Format(PyExc_ValueError, "%s: an int32 table of 4 columns expected", what);
        return -1;
    }
    *count = b->len / 16;
    return 0;
}

/* A row or column table: (phase, j, k, K) per entry, each within range; the largest K per phase. */
static int check_table(const int32_t *t, Py_ssize_t count, int phases, int j_max, int *k_max, const char *what) {
    for (int ph = 0; ph < phases; ph++) k_max[ph] = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        const int32_t ph = t[4 * i], j = t[4 * i + 1], k = t[4 * i + 2], kk = t[4 * i + 3];
        if (ph < 0 || ph >= phases || j < 0 || j >= j_max || kk < 1 || kk > MAX_K || k < 0 || k >= kk) {
            PyErr_Format(PyExc_ValueError, "%s: entry %zd (%d, %d, %d, %d) out of range", what, i, ph, j, k, kk);
            return -1;
        }
        if (kk > k_max[ph]) k_max[ph] = kk;
    }
    return 0;
}

static PyObject *interleave(PyObject *self, PyObject *args) {
    PyObject *seq, *cbo, *rowso, *colso, *outo;
    Py_buffer cbb = {0}, rowsb = {0}, colsb = {0}, outb = {0};
    int block, q_c, j_r, j_c;
    Py_ssize_t n;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiniiiOOO", &seq, &cbo, &block, &n, &q_c, &j_r, &j_c, &rowso, &colso, &outo))
        return NULL;
    Parts parts = {NULL, 0};
    Py_ssize_t *offs = NULL;
    const float **rp = NULL;
    int32_t *pcx = NULL, *cb = NULL, *rows = NULL, *cols = NULL;
    int *kr_max = NULL, *kc_max = NULL;
    PyObject *result = NULL;
    PyObject *fast = NULL;
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT;
    if (PyObject_GetBuffer(cbo, &cbb, flags) < 0 || PyObject_GetBuffer(rowso, &rowsb, flags) < 0 ||
        PyObject_GetBuffer(colso, &colsb, flags) < 0 || PyObject_GetBuffer(outo, &outb, flags | PyBUF_WRITABLE) < 0)
        goto done;
    fast = PySequence_Tuple(seq);  /* (a tuple of its own: the caller's list cannot change under the walk) */
    if (fast == NULL) goto done;
    Py_ssize_t np_ = PyTuple_GET_SIZE(fast);
    if (block < 1 || block > 64 || n < 1 || q_c < 1 || j_r < 1 || j_c < 1 || np_ < 1 || np_ % q_c != 0) {
        PyErr_SetString(PyExc_ValueError, "interleave: bad block, batch, phase count or part shape");
        goto done;
    }
    int q_r = (int)(np_ / q_c);
    if (cbb.itemsize != 4 || (cbb.format != NULL && strcmp(cbb.format, "i") != 0) || cbb.len != 4 * np_) {
        PyErr_SetString(PyExc_ValueError, "cb: one int32 channel-block count per part expected");
        goto done;
    }
    cb = own_copy(&cbb);
    if (cb == NULL) goto done;
    parts.parts = PyMem_Calloc((size_t)np_, sizeof(Py_buffer));
    if (parts.parts == NULL) { PyErr_NoMemory(); goto done; }
    Py_ssize_t plane, row_floats, size;  /* floats per channel block, per (m, jr) row of one block */
    if (!product(j_r, j_c, &plane) || !product(plane, block, &plane) || !product(j_c, block, &row_floats)) {
        PyErr_SetString(PyExc_ValueError, "interleave: part shape too large");
        goto done;
    }
    for (Py_ssize_t i = 0; i < np_; i++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(fast, i), &parts.parts[i], flags) < 0)
            goto done;
        parts.nparts = i + 1;
        if (float_buffer(&parts.parts[i], "part") < 0) goto done;
        if (cb[i] < 1 || !product(n, cb[i], &size) || !product(size, plane, &size) || !product(size, 4, &size) ||
            parts.parts[i].len != size) {
            PyErr_Format(PyExc_ValueError, "part %zd: %zd bytes for %d channel blocks", i, parts.parts[i].len, cb[i]);
            goto done;
        }
    }
    Py_ssize_t h, w;
    if (int_table(&rowsb, &h, "rows") < 0 || int_table(&colsb, &w, "cols") < 0) goto done;
    if (h < 1 || w < 1) {
        PyErr_SetString(PyExc_ValueError, "interleave: an empty window");
        goto done;
    }
    if (float_buffer(&outb, "out") < 0) goto done;
    if (!product(n, 12, &size) || !product(size, h, &size) || !product(size, w, &size) || outb.len != size) {
        PyErr_SetString(PyExc_ValueError, "out: (n, 3, rows, cols) float32 expected");
        goto done;
    }
    rows = own_copy(&rowsb);
    cols = own_copy(&colsb);
    if (rows == NULL || cols == NULL) goto done;
    kr_max = PyMem_Calloc((size_t)q_r, sizeof(int));
    kc_max = PyMem_Calloc((size_t)q_c, sizeof(int));
    if (kr_max == NULL || kc_max == NULL) { PyErr_NoMemory(); goto done; }
    if (check_table(rows, h, q_r, j_r, kr_max, "rows") < 0 || check_table(cols, w, q_c, j_c, kc_max, "cols") < 0)
        goto done;
    int a_max = 0;  /* a = o * Kr + kr < 3 Kr */
    for (int pr = 0; pr < q_r; pr++) {
        if (3 * kr_max[pr] > a_max) a_max = 3 * kr_max[pr];
        for (int pc = 0; pc < q_c; pc++) {
            const Py_ssize_t channels = (Py_ssize_t)cb[pr * q_c + pc] * block;
            if (kr_max[pr] && kc_max[pc] && (Py_ssize_t)3 * kr_max[pr] * kc_max[pc] > channels) {
                PyErr_Format(PyExc_ValueError, "part %d: %zd channels for slots %d x %d", pr * q_c + pc, channels,
                             kr_max[pr], kc_max[pc]);
                goto done;
            }
        }
    }
    /* offs[a * w + x]: column x's offset within its part's (m, jr) row for a = o Kr + kr */
    offs = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)a_max * (size_t)w);
    rp = PyMem_Malloc(sizeof(float *) * (size_t)q_c);
    pcx = PyMem_Malloc(sizeof(int32_t) * (size_t)w);
    if (offs == NULL || rp == NULL || pcx == NULL) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t x = 0; x < w; x++) pcx[x] = cols[4 * x];
    for (int a = 0; a < a_max; a++) {
        for (Py_ssize_t x = 0; x < w; x++) {
            const int32_t jc = cols[4 * x + 1], kc = cols[4 * x + 2], kk = cols[4 * x + 3];
            const Py_ssize_t c = (Py_ssize_t)a * kk + kc;
            offs[a * w + x] = (c / block) * plane + (Py_ssize_t)jc * block + c % block;
        }
    }
    float *out = (float *)outb.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t m = 0; m < n; m++) {
        for (Py_ssize_t y = 0; y < h; y++) {
            const int32_t pr = rows[4 * y], jr = rows[4 * y + 1], kr = rows[4 * y + 2], kk = rows[4 * y + 3];
            for (int pc = 0; pc < q_c; pc++) {  /* the row's (m, jr) start in each part of its row phase */
                const int i = pr * q_c + pc;
                rp[pc] = (const float *)parts.parts[i].buf + (m * cb[i] * plane + jr * row_floats);
            }
            for (int o = 0; o < 3; o++) {
                const Py_ssize_t *off = offs + (Py_ssize_t)(o * kk + kr) * w;
                float *dst = out + ((m * 3 + o) * h + y) * w;
                if (q_c == 1) {
                    const float *src = rp[0];
                    for (Py_ssize_t x = 0; x < w; x++) dst[x] = src[off[x]];
                } else {
                    for (Py_ssize_t x = 0; x < w; x++) dst[x] = rp[pcx[x]][off[x]];
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(fast);
    release_parts(&parts);
    PyMem_Free(offs);
    PyMem_Free(rp);
    PyMem_Free(pcx);
    PyMem_Free(cb);
    PyMem_Free(rows);
    PyMem_Free(cols);
    PyMem_Free(kr_max);
    PyMem_Free(kc_max);
    PyBuffer_Release(&cbb);
    PyBuffer_Release(&rowsb);
    PyBuffer_Release(&colsb);
    PyBuffer_Release(&outb);
    return result;
}

/* pack(table, nc, roffs, coffs, kr, kc, c, block, out): phase pairs' filters from the filter table (nr, nc, 9 C 3)
 * floats, each row (ky, kx, c, o)) into ONNX Runtime's OIhw{B}i{B}o layout, out (n, opad, C, 3, 3) in memory
 * (n, opad / B, C / B, 3, 3, B_i, B_o): output channel oc = (o, kr, kc) of pair p reads row (roffs[p, kr],
 * coffs[p, kc]); channels from 3 kr kc to opad are zero. */
static PyObject *pack(PyObject *self, PyObject *args) {
    PyObject *tableo, *roffso, *coffso, *outo;
    Py_buffer tb = {0}, rb = {0}, cbuf = {0}, ob = {0};
    int nc, kr, kc, c, block;
    Py_ssize_t *src = NULL;
    int32_t *ro = NULL, *co = NULL;
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OiOOiiiiO", &tableo, &nc, &roffso, &coffso, &kr, &kc, &c, &block, &outo))
        return NULL;
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT;
    if (PyObject_GetBuffer(tableo, &tb, flags) < 0 || PyObject_GetBuffer(roffso, &rb, flags) < 0 ||
        PyObject_GetBuffer(coffso, &cbuf, flags) < 0 || PyObject_GetBuffer(outo, &ob, flags | PyBUF_WRITABLE) < 0)
        goto done;
    if (float_buffer(&tb, "table") < 0 || float_buffer(&ob, "out") < 0) goto done;
    if (nc < 1 || kr < 1 || kc < 1 || kr > MAX_K || kc > MAX_K || c < 1 || block < 1 || block > 64 || c % block) {
        PyErr_SetString(PyExc_ValueError, "pack: bad column count, slot counts, channels or block");
        goto done;
    }
    Py_ssize_t row, per_nr, per_pair;  /* floats per table row; bytes per table row index; floats per pair */
    if (!product(27, c, &row) || !product(row, nc, &per_nr) || !product(per_nr, 4, &per_nr) ||
        !product(9, c, &per_pair)) {
        PyErr_SetString(PyExc_ValueError, "pack: table shape too large");
        goto done;
    }
    if (tb.len % per_nr != 0 || tb.len == 0) {
        PyErr_SetString(PyExc_ValueError, "table: (rows, nc, 27 C) float32 expected");
        goto done;
    }
    const Py_ssize_t nr = tb.len / per_nr;
    if (rb.itemsize != 4 || cbuf.itemsize != 4 || (rb.format && strcmp(rb.format, "i")) ||
        (cbuf.format && strcmp(cbuf.format, "i")) || rb.len % (4 * kr) || cbuf.len % (4 * kc) ||
        rb.len / (4 * kr) != cbuf.len / (4 * kc) || rb.len == 0) {
        PyErr_SetString(PyExc_ValueError, "roffs, coffs: int32 (n, kr) and (n, kc) expected");
        goto done;
    }
    const Py_ssize_t n = rb.len / (4 * kr);
    const int used = 3 * kr * kc;
    Py_ssize_t per_out, opad_ = 0;  /* bytes per output channel over all pairs */
    if (!product(n, per_pair, &per_out) || !product(per_out, 4, &per_out)) {
        PyErr_SetString(PyExc_ValueError, "pack: too many pairs");
        goto done;
    }
    opad_ = ob.len / per_out;
    const int opad = opad_ > 4096 ? 0 : (int)opad_;
    if (ob.len != opad_ * per_out || opad < used || opad % block) {
        PyErr_SetString(PyExc_ValueError, "out: (n, opad, C, 3, 3) float32 with opad >= 3 kr kc, whole blocks");
        goto done;
    }
    ro = own_copy(&rb);
    co = own_copy(&cbuf);
    if (ro == NULL || co == NULL) goto done;
    for (Py_ssize_t i = 0; i < n * kr; i++)
        if (ro[i] < 0 || ro[i] >= nr) { PyErr_SetString(PyExc_ValueError, "roffs: out of range"); goto done; }
    for (Py_ssize_t i = 0; i < n * kc; i++)
        if (co[i] < 0 || co[i] >= nc) { PyErr_SetString(PyExc_ValueError, "coffs: out of range"); goto done; }
    src = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)opad);
    if (src == NULL) { PyErr_NoMemory(); goto done; }
    const float *table = (const float *)tb.buf;
    float *out = (float *)ob.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t p = 0; p < n; p++) {
        for (int oc = 0; oc < opad; oc++) {  /* each output channel's first value in the table, or -1 */
            if (oc >= used) { src[oc] = -1; continue; }
            const int o = oc / (kr * kc), r = (oc / kc) % kr, s = oc % kc;
            src[oc] = ((Py_ssize_t)ro[p * kr + r] * nc + co[p * kc + s]) * row + o;
        }
        for (int obk = 0; obk < opad / block; obk++) {
            for (int cb = 0; cb < c / block; cb++) {
                for (int t = 0; t < 9; t++) {
                    for (int bi = 0; bi < block; bi++) {
                        const Py_ssize_t at = ((Py_ssize_t)t * c + cb * block + bi) * 3;
                        for (int bo = 0; bo < block; bo++) {
                            const Py_ssize_t s0 = src[obk * block + bo];
                            *out++ = s0 < 0 ? 0.0f : table[s0 + at];
                        }
                    }
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(src);
    PyMem_Free(ro);
    PyMem_Free(co);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&cbuf);
    PyBuffer_Release(&ob);
    return result;
}

static PyMethodDef methods[] = {
    {"interleave", interleave, METH_VARARGS,
     "interleave(parts, cb, block, n, q_c, j_r, j_c, rows, cols, out): the NCHWc parts' values into the (n, 3, "
     "rows, cols) window (module docstring of metasr.runtime.native)."},
    {"pack", pack, METH_VARARGS,
     "pack(table, nc, roffs, coffs, kr, kc, c, block, out): phase pairs' filters in the OIhw{B}i{B}o layout."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
