/* Optional C accelerator of the AlwaysOn InfoTable row reader (see rowcodec.py, docs/alwayson.md).
 *
 * One RowReader object per column layout. Its read() method reads the *regular* rows of a table
 * exactly as the row reader that rowcodec.py generates in Python does, and stops at the first
 * row it does not read; the Python wrapper in rowcodec.py re-reads that row with the checked
 * reader (which raises the precise error, or reads it) and calls read() again after it.
 *
 *   RowReader(columns, tzinfo, json_scan, json_fallback)
 *       columns: a tuple of (name: str, type_byte: int, kind: str, need: int, reader) per
 *           column, in order. kind is one of
 *             "d" NUMBER (big-endian double)      "i" INTEGER (big-endian int32)
 *             "q" big-endian int64 (LONG, TIMESPAN as unconfirmed.py's structs say)
 *             "?" BOOLEAN (nonzero -> True)       "T" DATETIME (int64 ms -> aware datetime)
 *             "s" string-like (strict UTF-8)      "j" JSON (text kept as bytes, parsed later)
 *             "r" any other base type, read by calling reader(buf, pos + 1, depth)
 *           need > 0 on the first column of a run of fixed-width columns: the generated reader
 *           reads the whole run with one struct unpack, so the row is irregular unless `need`
 *           bytes are there (read cell by cell, the row would otherwise read differently at the
 *           end of a truncated buffer).
 *       tzinfo: the tzinfo of the datetimes (values.EPOCH's).
 *       json_scan: json's scanner, called as json_scan(text, 0) -> (value, end).
 *       json_fallback: called with a JSON cell's bytes when the scan fails; returns the value or
 *           raises the precise error (valuecodec.json_cell_bytes).
 *
 *   read(buf: bytes, pos: int, depth: int, rows: list, pending: list[list]) -> int
 *       Appends the regular rows found from pos to `rows` (dicts in column order) and returns the
 *       position where it stopped: a byte other than a row marker 1 (the end marker, or bad
 *       data), the start of an irregular row, or a position at or past the end of buf.
 *       JSON cells are set to None in the row and their bytes (None for NOTHING) appended to
 *       pending[k] for the k-th JSON column, one entry per row, as the generated reader does;
 *       parse_json() parses them once the table has been read, so that errors come out in the
 *       same order.
 *
 *   parse_json(rows, pending) -> None
 *       Parses each pending JSON cell (column by column, row by row) and stores the value in its
 *       row: decode + json_scan, which must end exactly at the end of the text, else
 *       json_fallback(bytes), whose exception propagates.
 *
 * A regular cell has its column's type byte, or 255 (NOTHING -> None). A row is irregular when a
 * cell has another type byte, the row's cell count differs, a cell or run does not fit in the
 * buffer, a string is not valid UTF-8, a DATETIME is outside the years 1-9999, or a column reader
 * ("r") raises an Exception. Like the generated reader, the end of a string is not checked
 * against the end of the buffer when the string is read: the text is what lies before the end
 * of the buffer, and the next read (a cell: irregular row; the next row marker: the wrapper's
 * buf[pos] raises IndexError) fails. Nothing is ever read out of bounds.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>

/* DATETIME limits: 0001-01-01T00:00:00.000 and 9999-12-31T23:59:59.999, in ms since 1970. */
#define MIN_MS (-62135596800000LL)
#define MAX_MS (253402300799999LL)

typedef struct {
    PyObject *name;     /* the dict key (str) */
    PyObject *reader;   /* kind 'r': the Python reader, or NULL when there is none */
    Py_ssize_t need;    /* bytes a fixed-width run starting here needs; 0 elsewhere */
    Py_ssize_t json;    /* kind 'j': index of this column's list in `pending` */
    unsigned char type_byte;
    char kind;
} Column;

typedef struct {
    PyObject_HEAD
    Py_ssize_t ncols;
    Py_ssize_t njson;
    Column *cols;
    PyObject *tzinfo;
    PyObject *json_scan;
    PyObject *json_fallback;
} RowReader;

/* Outcome of reading one cell. */
enum { CELL_OK = 0, CELL_IRREGULAR = 1, CELL_ERROR = -1 };

/* ------------------------------------------------------------------------- byte helpers */

static uint64_t
be_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static int64_t
be_i64(const unsigned char *p)
{
    uint64_t u = be_u64(p);
    /* Two's complement without relying on implementation-defined conversions. */
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

static int32_t
be_i32(const unsigned char *p)
{
    uint32_t u = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return u <= (uint32_t)INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* floor division and its non-negative remainder */
static int64_t
floor_div(int64_t a, int64_t b, int64_t *rem)
{
    int64_t q = a / b, r = a % b;
    if (r < 0) {
        r += b;
        q -= 1;
    }
    *rem = r;
    return q;
}

/* ms since the epoch -> aware datetime equal to EPOCH + timedelta(milliseconds=ms).
 * Returns NULL without an exception set when ms is outside datetime's range. */
static PyObject *
datetime_from_ms(int64_t ms, PyObject *tzinfo)
{
    if (ms < MIN_MS || ms > MAX_MS) {
        return NULL;
    }
    int64_t msec, sod;
    int64_t secs = floor_div(ms, 1000, &msec);
    int64_t days = floor_div(secs, 86400, &sod);
    /* civil_from_days (H. Hinnant): days since 1970-01-01 -> proleptic Gregorian y-m-d. */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                       /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                     /* [0, 11], from March */
    int day = (int)(doy - (153 * mp + 2) / 5 + 1);
    int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    int year = (int)(yoe + era * 400 + (month <= 2));
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        year, month, day, (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60),
        (int)(msec * 1000), tzinfo, PyDateTimeAPI->DateTimeType);
}

/* An exception of the Python reader of a cell makes its row irregular, as the generated
 * reader's `except Exception` does; anything else (KeyboardInterrupt...) propagates. */
static int
irregular_if_exception(void)
{
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return CELL_IRREGULAR;
    }
    return CELL_ERROR;
}

/* ------------------------------------------------------------------------------ reading */

/* Read the cell of column `c` whose type byte is at *pos: on CELL_OK, *value is a new
 * reference (NULL for a JSON text, whose bytes went to `jlist`) and *pos is after the cell. */
static int
read_cell(RowReader *self, const Column *c, PyObject *buf, const unsigned char *data,
          Py_ssize_t len, Py_ssize_t *pos, PyObject *depth, PyObject *jlist, PyObject **value)
{
    Py_ssize_t p = *pos;
    if (p >= len) {
        return CELL_IRREGULAR;
    }
    unsigned char tb = data[p];
    if (tb != c->type_byte) {
        if (tb != 0xFF) {
            return CELL_IRREGULAR;
        }
        if (c->kind == 'j' && PyList_Append(jlist, Py_None) < 0) {
            return CELL_ERROR;
        }
        *value = Py_NewRef(Py_None);
        *pos = p + 1;
        return CELL_OK;
    }
    Py_ssize_t avail = len - p - 1; /* bytes after the type byte */
    const unsigned char *v = data + p + 1;
    switch (c->kind) {
    case 'd': {
        if (avail < 8) {
            return CELL_IRREGULAR;
        }
        double d = PyFloat_Unpack8((const char *)v, 0); /* 0: big-endian, as struct '>d' */
        if (d == -1.0 && PyErr_Occurred()) {
            return CELL_ERROR;
        }
        *value = PyFloat_FromDouble(d);
        *pos = p + 9;
        break;
    }
    case 'i':
        if (avail < 4) {
            return CELL_IRREGULAR;
        }
        *value = PyLong_FromLong(be_i32(v));
        *pos = p + 5;
        break;
    case 'q':
        if (avail < 8) {
            return CELL_IRREGULAR;
        }
        *value = PyLong_FromLongLong(be_i64(v));
        *pos = p + 9;
        break;
    case '?':
        if (avail < 1) {
            return CELL_IRREGULAR;
        }
        *value = Py_NewRef(v[0] ? Py_True : Py_False);
        *pos = p + 2;
        return CELL_OK;
    case 'T':
        if (avail < 8) {
            return CELL_IRREGULAR;
        }
        *value = datetime_from_ms(be_i64(v), self->tzinfo);
        if (*value == NULL && !PyErr_Occurred()) {
            return CELL_IRREGULAR; /* outside the years 1-9999 */
        }
        *pos = p + 9;
        break;
    case 's':
    case 'j': {
        /* length: 1 byte under 128, else 4 bytes with the high bit set */
        if (avail < 1) {
            return CELL_IRREGULAR;
        }
        Py_ssize_t n, start;
        if (v[0] < 128) {
            n = v[0];
            start = p + 2;
        }
        else {
            if (avail < 4) {
                return CELL_IRREGULAR;
            }
            n = (Py_ssize_t)(((uint32_t)(v[0] & 0x7F) << 24) | ((uint32_t)v[1] << 16) |
                             ((uint32_t)v[2] << 8) | v[3]);
            start = p + 5;
        }
        /* start <= len here. A text running past the end is cut at the end, as a Python slice
         * is; the position then lies past the end (len + 1 stands for it: nothing after this
         * cell can be read there, and it cannot overflow). */
        Py_ssize_t end = n <= len - start ? start + n : len;
        const char *text = (const char *)data + start;
        if (c->kind == 's') {
            *value = PyUnicode_DecodeUTF8(text, end - start, NULL); /* strict */
            if (*value == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    return CELL_ERROR;
                }
                PyErr_Clear();
                return CELL_IRREGULAR;
            }
        }
        else {
            PyObject *raw = PyBytes_FromStringAndSize(text, end - start);
            if (raw == NULL) {
                return CELL_ERROR;
            }
            int failed = PyList_Append(jlist, raw);
            Py_DECREF(raw);
            if (failed) {
                return CELL_ERROR;
            }
            *value = Py_NewRef(Py_None);
        }
        *pos = n <= len - start ? start + n : len + 1;
        return CELL_OK;
    }
    default: { /* 'r': value, pos = reader(buf, pos + 1, depth) */
        if (c->reader == NULL) {
            return CELL_IRREGULAR; /* no reader: the checked reader raises */
        }
        PyObject *at = PyLong_FromSsize_t(p + 1);
        if (at == NULL) {
            return CELL_ERROR;
        }
        PyObject *args[3] = {buf, at, depth};
        PyObject *res = PyObject_Vectorcall(c->reader, args, 3, NULL);
        Py_DECREF(at);
        if (res == NULL) {
            return irregular_if_exception();
        }
        Py_ssize_t next = -1;
        if (PyTuple_CheckExact(res) && PyTuple_GET_SIZE(res) == 2) {
            next = PyLong_AsSsize_t(PyTuple_GET_ITEM(res, 1));
            if (next == -1 && PyErr_Occurred()) {
                Py_DECREF(res);
                return irregular_if_exception();
            }
        }
        if (next < 0) {
            Py_DECREF(res);
            return CELL_IRREGULAR; /* not (value, pos): the checked reader decides */
        }
        *value = Py_NewRef(PyTuple_GET_ITEM(res, 0));
        Py_DECREF(res);
        *pos = next;
        return CELL_OK;
    }
    }
    return *value == NULL ? CELL_ERROR : CELL_OK;
}

/* Undo the JSON texts the row being read appended (the rows before it have `nrows` each). */
static int
drop_pending(PyObject *pending, Py_ssize_t njson, Py_ssize_t nrows)
{
    for (Py_ssize_t k = 0; k < njson; k++) {
        PyObject *list = PyList_GET_ITEM(pending, k);
        if (PyList_GET_SIZE(list) > nrows &&
            PyList_SetSlice(list, nrows, PyList_GET_SIZE(list), NULL) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
RowReader_read(RowReader *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "read(buf, pos, depth, rows, pending)");
        return NULL;
    }
    PyObject *buf = args[0], *depth = args[2], *rows = args[3], *pending = args[4];
    if (!PyBytes_CheckExact(buf) || !PyList_CheckExact(rows) || !PyList_CheckExact(pending)) {
        PyErr_SetString(PyExc_TypeError, "read() takes bytes, an int, an int, a list, a list");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "read() needs a position >= 0");
        return NULL;
    }
    Py_ssize_t nrows = PyList_GET_SIZE(rows);
    if (PyList_GET_SIZE(pending) != self->njson) {
        PyErr_SetString(PyExc_ValueError, "pending needs one list per JSON column");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < self->njson; k++) {
        PyObject *list = PyList_GET_ITEM(pending, k);
        if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) != nrows) {
            PyErr_SetString(PyExc_ValueError, "pending lists must have one entry per row");
            return NULL;
        }
    }
    /* The bytes object is immutable and the caller holds it: `data` stays valid even while a
     * column reader runs Python code. */
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t len = PyBytes_GET_SIZE(buf);
    unsigned char cnt_hi = (unsigned char)((self->ncols >> 8) & 0xFF);
    unsigned char cnt_lo = (unsigned char)(self->ncols & 0xFF);

    while (pos < len && data[pos] == 1) {
        Py_ssize_t start = pos;
        if (len - pos < 3 || data[pos + 1] != cnt_hi || data[pos + 2] != cnt_lo) {
            break; /* irregular row */
        }
        pos += 3;
        PyObject *row = PyDict_New();
        if (row == NULL) {
            return NULL;
        }
        int status = CELL_OK;
        for (Py_ssize_t i = 0; i < self->ncols && status == CELL_OK; i++) {
            const Column *c = &self->cols[i];
            if (c->need > len - pos) {
                status = CELL_IRREGULAR; /* the run's single unpack would fail */
                break;
            }
            PyObject *jlist = c->kind == 'j' ? PyList_GET_ITEM(pending, c->json) : NULL;
            PyObject *value = NULL;
            status = read_cell(self, c, buf, data, len, &pos, depth, jlist, &value);
            if (status == CELL_OK) {
                if (PyDict_SetItem(row, c->name, value) < 0) {
                    status = CELL_ERROR;
                }
                Py_DECREF(value);
            }
        }
        if (status == CELL_OK) {
            status = PyList_Append(rows, row) < 0 ? CELL_ERROR : CELL_OK;
        }
        Py_DECREF(row);
        if (status != CELL_OK) {
            if (drop_pending(pending, self->njson, PyList_GET_SIZE(rows)) < 0 ||
                status == CELL_ERROR) {
                return NULL;
            }
            pos = start; /* irregular: Python reads this row with the checked reader */
            break;
        }
    }
    return PyLong_FromSsize_t(pos);
}

/* The value of one JSON cell's bytes, as the generated reader parses it. New reference. */
static PyObject *
json_value(RowReader *self, PyObject *raw)
{
    PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL);
    if (text != NULL) {
        PyObject *zero = PyLong_FromLong(0);
        PyObject *res = zero ? PyObject_CallFunctionObjArgs(self->json_scan, text, zero, NULL)
                             : NULL;
        Py_XDECREF(zero);
        if (res != NULL) {
            PyObject *value = NULL;
            if (PyTuple_CheckExact(res) && PyTuple_GET_SIZE(res) == 2) {
                Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(res, 1));
                if (end == PyUnicode_GET_LENGTH(text)) {
                    value = Py_NewRef(PyTuple_GET_ITEM(res, 0));
                }
            }
            Py_DECREF(res);
            if (value != NULL) {
                Py_DECREF(text);
                return value;
            }
        }
        Py_DECREF(text);
    }
    /* Not exactly one JSON value: the checked parser gives the value or the precise error. */
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
    }
    return PyObject_CallOneArg(self->json_fallback, raw);
}

static PyObject *
RowReader_parse_json(RowReader *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        PyList_GET_SIZE(args[1]) != self->njson) {
        PyErr_SetString(PyExc_TypeError, "parse_json(rows, pending)");
        return NULL;
    }
    PyObject *rows = args[0], *pending = args[1];
    for (Py_ssize_t i = 0; i < self->ncols; i++) {
        const Column *c = &self->cols[i];
        if (c->kind != 'j') {
            continue;
        }
        PyObject *texts = PyList_GET_ITEM(pending, c->json);
        if (!PyList_CheckExact(texts) || PyList_GET_SIZE(texts) != PyList_GET_SIZE(rows)) {
            PyErr_SetString(PyExc_ValueError, "pending lists must have one entry per row");
            return NULL;
        }
        /* Indexes are re-checked each time: the fallback runs Python code. */
        for (Py_ssize_t r = 0; r < PyList_GET_SIZE(texts) && r < PyList_GET_SIZE(rows); r++) {
            PyObject *raw = PyList_GET_ITEM(texts, r);
            if (!PyBytes_Check(raw)) {
                continue; /* None: NOTHING, or a row the checked reader read */
            }
            Py_INCREF(raw);
            PyObject *value = json_value(self, raw);
            Py_DECREF(raw);
            if (value == NULL) {
                return NULL;
            }
            PyObject *row = PyList_GET_ITEM(rows, r);
            int failed = PyDict_Check(row) ? PyDict_SetItem(row, c->name, value) : 0;
            Py_DECREF(value);
            if (failed) {
                return NULL;
            }
        }
    }
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------------------- the type */

static int
RowReader_traverse(RowReader *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; self->cols != NULL && i < self->ncols; i++) {
        Py_VISIT(self->cols[i].name);
        Py_VISIT(self->cols[i].reader);
    }
    Py_VISIT(self->tzinfo);
    Py_VISIT(self->json_scan);
    Py_VISIT(self->json_fallback);
    return 0;
}

static int
RowReader_clear(RowReader *self)
{
    for (Py_ssize_t i = 0; self->cols != NULL && i < self->ncols; i++) {
        Py_CLEAR(self->cols[i].name);
        Py_CLEAR(self->cols[i].reader);
    }
    Py_CLEAR(self->tzinfo);
    Py_CLEAR(self->json_scan);
    Py_CLEAR(self->json_fallback);
    return 0;
}

static void
RowReader_dealloc(RowReader *self)
{
    PyObject_GC_UnTrack(self);
    RowReader_clear(self);
    PyMem_Free(self->cols);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
RowReader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"columns", "tzinfo", "json_scan", "json_fallback", NULL};
    PyObject *columns, *tzinfo, *json_scan, *json_fallback;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOO:RowReader", kwlist, &PyTuple_Type,
                                     &columns, &tzinfo, &json_scan, &json_fallback)) {
        return NULL;
    }
    if (!PyTZInfo_Check(tzinfo) || !PyCallable_Check(json_scan) ||
        !PyCallable_Check(json_fallback)) {
        PyErr_SetString(PyExc_TypeError, "RowReader needs a tzinfo and two callables");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(columns);
    if (n > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "an InfoTable has at most 65535 columns");
        return NULL;
    }
    RowReader *self = (RowReader *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->cols = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(Column));
    if (self->cols == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->ncols = n;
    self->tzinfo = Py_NewRef(tzinfo);
    self->json_scan = Py_NewRef(json_scan);
    self->json_fallback = Py_NewRef(json_fallback);
    for (Py_ssize_t i = 0; i < n; i++) {
        Column *c = &self->cols[i];
        PyObject *name, *reader;
        int type_byte;
        const char *kind;
        Py_ssize_t need;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(columns, i), "UisnO:RowReader column", &name,
                              &type_byte, &kind, &need, &reader)) {
            Py_DECREF(self);
            return NULL;
        }
        if (type_byte < 0 || type_byte > 255 || need < 0 || strlen(kind) != 1 ||
            strchr("diq?Tsjr", kind[0]) == NULL) {
            PyErr_Format(PyExc_ValueError, "bad RowReader column %zd", i);
            Py_DECREF(self);
            return NULL;
        }
        c->name = Py_NewRef(name);
        c->reader = reader == Py_None ? NULL : Py_NewRef(reader);
        c->type_byte = (unsigned char)type_byte;
        c->kind = kind[0];
        c->need = need;
        c->json = kind[0] == 'j' ? self->njson++ : -1;
    }
    return (PyObject *)self;
}

static PyMethodDef RowReader_methods[] = {
    {"read", (PyCFunction)(void (*)(void))RowReader_read, METH_FASTCALL,
     "read(buf, pos, depth, rows, pending) -> the position where reading stopped"},
    {"parse_json", (PyCFunction)(void (*)(void))RowReader_parse_json, METH_FASTCALL,
     "parse_json(rows, pending) -> None: parse the pending JSON cells into their rows"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RowReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.alwayson._rowreader.RowReader",
    .tp_doc = "The C reader of the regular rows of one column layout (see the module source).",
    .tp_basicsize = sizeof(RowReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = RowReader_new,
    .tp_dealloc = (destructor)RowReader_dealloc,
    .tp_traverse = (traverseproc)RowReader_traverse,
    .tp_clear = (inquiry)RowReader_clear,
    .tp_methods = RowReader_methods,
};

static struct PyModuleDef rowreader_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "agent.alwayson._rowreader",
    .m_doc = "Optional C accelerator of the AlwaysOn InfoTable row reader.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__rowreader(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    if (PyType_Ready(&RowReaderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&rowreader_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "RowReader", (PyObject *)&RowReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
