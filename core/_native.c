/* core._native: clean paths of the flow in C, each with its Python reference kept.
 *
 * Reader: decode's compiled signal reader (operators/signal_reader.py).
 * decode_run: decode's batch loop over the readers (operators/decode.py
 * SignalDecoder.decode_many, reference decode_many_python), after the Reader.
 * tag_run: tenant-tag's batch path (operators/tenancy.py tag_run).
 * raw_records: the Kafka source's common message (sources/kafka.py _Partition._records).
 * validate_run: validate's step over a batch (operators/validate.py validate_batch), its own
 * section below.
 * dedupe_run: dedupe's batch check (operators/dedupe.py _dedupe_columns), its own section below.
 * psi_terms, ks_bound, cuts_below, drift_passes, with_horizon: the drift step's statistics and
 * release (operators/drift_stats.py, operators/drift.py), their own section below.
 * score_run: the score step's loop and its publication (operators/score.py TickScore.add,
 * reference add_python), its own section below.
 * drift_run: the drift step's plain path (operators/drift.py TenantDrift.push_batch, reference
 * native=False), its own section just before the method table.
 * kind_of: operators.split's split of a batch by kind.
 * plan_place: a replay plan's rows into their planned commits (sinks/lake_plan.py
 * _PlannedBatches._place, reference _place_python), its own section before the method table.
 * lake_columns: the lake's Arrow buffers of a batch of signals or scores (sinks/lake_tables.py
 * TableDef.to_arrow, reference python_to_arrow), its own section below. Built with
 * -ffp-contract=off (setup.py): psi_terms must give its reference's bits, which a fused
 * multiply-add (a -march build) would not.
 *
 * A Reader reads one framed Avro body of one writer schema (whose fields are the reader's, read
 * without resolution) straight into a core.records.Decoded, as the Python function that
 * signal_reader.compile_reader writes for that writer does: the same values, built the same way
 * (object.__new__, then each slot through its descriptor), the same SHA-256 of the whole value.
 * It only ever accepts: whatever is not a plainly well-formed body raises the Unread class it
 * was given (or the error of a conversion that failed: invalid UTF-8, a time no datetime holds),
 * and the caller decodes that record with the per-record reference, which names the reason.
 *
 * Field kinds (one per writer field, in the writer's order):
 *   0 string, 1 double, 2 union [null, double], 3 long timestamp-micros, 4 array of string.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <openssl/evp.h>
#include <string.h>

/* SHA-256 with the algorithm fetched once: OpenSSL 3's one-shot SHA256() fetches it from its
 * provider on every call (core/_build_rowhash.py found the same). Every caller holds the GIL,
 * so one context serves them all. */
static EVP_MD *sha256_md;
static EVP_MD_CTX *sha256_ctx;

static int
digest_begin(void)
{
    if (!EVP_DigestInit_ex2(sha256_ctx, sha256_md, NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL: SHA-256 failed");
        return -1;
    }
    return 0;
}

static int
digest_add(const void *data, size_t n)
{
    if (!EVP_DigestUpdate(sha256_ctx, data, n)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL: SHA-256 failed");
        return -1;
    }
    return 0;
}

/* The digest's first n_bytes as 2 * n_bytes lower-case hex digits, a str. */
static PyObject *
digest_hex(int n_bytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[EVP_MAX_MD_SIZE];
    char text[2 * EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_DigestFinal_ex(sha256_ctx, digest, &len) || len != 32 || n_bytes > 32) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL: SHA-256 failed");
        return NULL;
    }
    for (int i = 0; i < n_bytes; i++) {
        text[2 * i] = hex[digest[i] >> 4];
        text[2 * i + 1] = hex[digest[i] & 0xF];
    }
    return PyUnicode_FromStringAndSize(text, 2 * n_bytes);
}

enum { K_STRING = 0, K_DOUBLE = 1, K_NULL_DOUBLE = 2, K_TS_MICROS = 3, K_STRINGS = 4 };
enum { N_SIGNAL = 8, N_PROVENANCE = 5, N_DECODED = 7, SELECTORS = 7, MAX_FIELDS = 64 };
/* The shared strings' table (a power of two) and the longest string it holds. */
enum { STR_CACHE = 256, STR_SHARED_MAX = 64 };

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_fields;
    int kinds[MAX_FIELDS];
    /* Per Signal field (constructor order): the writer field giving it, or -1: the default. */
    int signal_from[N_SIGNAL];
    PyObject *signal_default[N_SIGNAL];
    PyTypeObject *classes[3];            /* Signal, Provenance, Decoded */
    PyObject *signal_set[N_SIGNAL];       /* each field's slot descriptor, constructor order */
    PyObject *provenance_set[N_PROVENANCE];
    PyObject *decoded_set[N_DECODED];
    PyObject *epoch;
    PyObject *unread;
    PyObject *schema_id;
    PyObject *empty;                      /* () */
    /* Per writer field: whether its strings are few and repeated (the Signal's tenant_id, type
     * and source), so one str object each is shared (string_at). */
    char shared[MAX_FIELDS];
    PyObject *strings[STR_CACHE];         /* those strs, direct-mapped by their bytes' hash */
    int unix_epoch;                       /* epoch is 1970-01-01T00:00 (timestamp_of) */
} Reader;

static PyObject *s_topic, *s_partition, *s_offset, *s_timestamp_ms;

static int
unread(Reader *self, const char *why)
{
    PyErr_SetString(self->unread, why);
    return -1;
}

/* A zig-zag varint of at most 9 bytes at *pos (as signal_reader._varint). */
static int
varint(Reader *self, const unsigned char *buf, Py_ssize_t size, Py_ssize_t *pos, int64_t *out)
{
    uint64_t result = 0;
    int shift = 0;
    for (;;) {
        if (*pos >= size)
            return unread(self, "body ends early");
        unsigned char b = buf[(*pos)++];
        result |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80)
            break;
        shift += 7;
        if (shift > 56)
            return unread(self, "varint of 10 bytes or more");
    }
    *out = (int64_t)(result >> 1) ^ -(int64_t)(result & 1);
    return 0;
}

/* The str of the n bytes at text, one object for every record of the batch and after it that
 * has the same ASCII bytes (a tenant's id, a signal type, a source: a handful of values over
 * millions of records): found by the bytes' FNV-1a hash in a direct-mapped table, compared
 * byte for byte, replaced when another string hashes to its entry. Equal to what
 * PyUnicode_DecodeUTF8 makes of them (strs are immutable: only `is` tells them apart), and each
 * record no longer allocates, and frees at the end of the flow, its own copy (session 31). */
static PyObject *
shared_string(Reader *self, const unsigned char *text, Py_ssize_t n)
{
    uint32_t h = 2166136261u;
    unsigned char high = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        h = (h ^ text[i]) * 16777619u;
        high |= text[i];
    }
    if (high & 0x80) /* not ASCII: decoded (and checked) each time */
        return PyUnicode_DecodeUTF8((const char *)text, n, NULL);
    PyObject **entry = &self->strings[(h ^ (h >> 16)) & (STR_CACHE - 1)];
    PyObject *held = *entry;
    if (held != NULL && PyUnicode_GET_LENGTH(held) == n &&
        memcmp(PyUnicode_DATA(held), text, (size_t)n) == 0)
        return Py_NewRef(held);
    PyObject *s = PyUnicode_DecodeUTF8((const char *)text, n, NULL); /* compact ASCII */
    if (s != NULL && PyUnicode_IS_COMPACT_ASCII(s))
        Py_XSETREF(*entry, Py_NewRef(s));
    return s;
}

static PyObject *
string_at(Reader *self, const unsigned char *buf, Py_ssize_t size, Py_ssize_t *pos, int shared)
{
    int64_t n;
    if (varint(self, buf, size, pos, &n) < 0)
        return NULL;
    if (n < 0 || n > size - *pos) {
        unread(self, "string");
        return NULL;
    }
    PyObject *s = shared && n <= STR_SHARED_MAX
                      ? shared_string(self, buf + *pos, (Py_ssize_t)n)
                      : PyUnicode_DecodeUTF8((const char *)buf + *pos, (Py_ssize_t)n, NULL);
    *pos += (Py_ssize_t)n;
    return s;
}

static PyObject *
double_at(Reader *self, const unsigned char *buf, Py_ssize_t size, Py_ssize_t *pos)
{
    if (size - *pos < 8) {
        unread(self, "body ends early");
        return NULL;
    }
    double d = PyFloat_Unpack8((const char *)buf + *pos, 1);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    *pos += 8;
    return PyFloat_FromDouble(d);
}

/* epoch + timedelta(0, 0, us), as fastavro reads timestamp-micros. */
static PyObject *
timestamp_of(Reader *self, int64_t us)
{
    const int64_t per_day = 86400000000LL;
    int64_t days = us / per_day, rest = us % per_day;
    if (rest < 0) {
        rest += per_day;
        days -= 1;
    }
    if (days > 999999999 || days < -999999999) {
        unread(self, "timestamp out of range");
        return NULL;
    }
    if (self->unix_epoch && -719162 <= days && days <= 2932896) {
        /* 0001-01-01 .. 9999-12-31: made directly */
        /* the civil date of a day count since 1970-01-01 (H. Hinnant's days_from_civil,
         * inverted; an era is 400 years, 146,097 days) */
        long long z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
        long long doe = z - era * 146097;                                   /* [0, 146096] */
        long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
        long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);            /* [0, 365] */
        long long mp = (5 * doy + 2) / 153;                                 /* March = 0 */
        int day = (int)(doy - (153 * mp + 2) / 5 + 1), month = (int)(mp < 10 ? mp + 3 : mp - 9);
        int year = (int)(yoe + era * 400 + (month <= 2));
        int secs = (int)(rest / 1000000);
        /* epoch + timedelta: the epoch's tzinfo, the same value; no timedelta made */
        return PyDateTimeAPI->DateTime_FromDateAndTime(
            year, month, day, secs / 3600, secs / 60 % 60, secs % 60, (int)(rest % 1000000),
            ((PyDateTime_DateTime *)self->epoch)->hastzinfo
                ? ((PyDateTime_DateTime *)self->epoch)->tzinfo
                : Py_None,
            PyDateTimeAPI->DateTimeType);
    }
    PyObject *delta = PyDelta_FromDSU((int)days, (int)(rest / 1000000), (int)(rest % 1000000));
    if (delta == NULL)
        return NULL;
    PyObject *at = PyNumber_Add(self->epoch, delta);
    Py_DECREF(delta);
    return at;
}

static PyObject *
strings_at(Reader *self, const unsigned char *buf, Py_ssize_t size, Py_ssize_t *pos)
{
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (;;) {
        int64_t count, ignored;
        if (varint(self, buf, size, pos, &count) < 0)
            goto fail;
        if (count == 0)
            break;
        if (count < 0) {
            count = -count;
            if (varint(self, buf, size, pos, &ignored) < 0)
                goto fail;
        }
        for (int64_t i = 0; i < count; i++) {
            PyObject *s = string_at(self, buf, size, pos, 0);
            if (s == NULL)
                goto fail;
            int err = PyList_Append(list, s);
            Py_DECREF(s);
            if (err < 0)
                goto fail;
        }
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *
read_field(Reader *self, int kind, int shared, const unsigned char *buf, Py_ssize_t size,
           Py_ssize_t *pos)
{
    int64_t n;
    switch (kind) {
    case K_STRING:
        return string_at(self, buf, size, pos, shared);
    case K_DOUBLE:
        return double_at(self, buf, size, pos);
    case K_NULL_DOUBLE:
        if (*pos >= size) {
            unread(self, "body ends early");
            return NULL;
        }
        switch (buf[(*pos)++]) {
        case 0:
            Py_RETURN_NONE;
        case 2:
            return double_at(self, buf, size, pos);
        default:
            unread(self, "union index");
            return NULL;
        }
    case K_TS_MICROS:
        if (varint(self, buf, size, pos, &n) < 0)
            return NULL;
        return timestamp_of(self, n);
    case K_STRINGS:
        return strings_at(self, buf, size, pos);
    default:
        unread(self, "field kind");
        return NULL;
    }
}

/* A record built here, complete, leaves the cyclic collector's lists (see build). */
static inline void
untracked(PyObject *obj)
{
    if (PyObject_IS_GC(obj))
        PyObject_GC_UnTrack(obj);
}

/* === slots: reading __slots__ fields at their offsets (decode's, tenant-tag's, dedupe's and
 * validate's sections) ====================================================================== */

#include <structmember.h>

/* A slot's offset in its class's instances, from its member descriptor (an object slot that
 * __slots__ made, of class *owner), or -1 with an exception. */
static Py_ssize_t
slot_offset(PyObject *descr, PyTypeObject **owner)
{
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "slots must be __slots__ descriptors");
        return -1;
    }
    *owner = PyDescr_TYPE(descr);
    return ((PyMemberDescrObject *)descr)->d_member->offset;
}

/* An instance's slot at offset: a borrowed reference, NULL when it was never set. */
#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* An exact int (not a subclass) within int64 as a C value: 1 and *out, else 0 (NULL, another
 * type, past int64; no exception left set). drift's, dedupe's and score's ints. */
static int
exact_int64(PyObject *value, long long *out)
{
    if (value == NULL || !PyLong_CheckExact(value)) {
        PyErr_Clear();
        return 0;
    }
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* object.__new__(cls), then each slot set through its descriptor to values[i]; the record is
 * then untracked by the cyclic collector. Every class built here is a core.records record:
 * immutable, its slots set once, here, to values that existed before it (strings, numbers,
 * times, bytes, tuples, other records), so no reference cycle can pass through it, and the
 * collector, which counts references from untracked objects as from outside, never frees
 * anything it reaches. Tracked, each record was traversed by a young and a middle collection
 * while the flow held it (the lake's batches: ~0.29 s of collections in a 200,000-signal run,
 * session 30); msgspec's gc=False structs are the same idea. Python builds of the same records
 * (the references, the tests) stay tracked: only the collector's work differs. */
static PyObject *
build(PyTypeObject *cls, PyObject **setters, PyObject **values, int n)
{
    PyObject *obj = cls->tp_alloc(cls, 0);
    if (obj == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (Py_TYPE(setters[i])->tp_descr_set(setters[i], obj, values[i]) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    untracked(obj);
    return obj;
}

static PyObject *
input_hash(const unsigned char *buf, Py_ssize_t size)
{
    if (digest_begin() < 0 || digest_add(buf, (size_t)size) < 0)
        return NULL;
    return digest_hex(32);
}

/* What a Reader reads of a RawRecord at its slots' offsets (decode_run's readers), in this
 * order; RR_NONE: through attribute lookups. */
enum { RR_TOPIC, RR_PARTITION, RR_OFFSET, RR_TIMESTAMP, RR_ERROR, RR_VALUE, RR_SLOTS };
#define RR_NONE NULL

/* raw's attribute name (RR_TOPIC .. RR_TIMESTAMP), at its slot when raw_slots is given (raw
 * then exactly their class, every one of those slots set): a new reference, or NULL. */
static PyObject *
raw_field(PyObject *raw, const Py_ssize_t *raw_slots, int which, PyObject *name)
{
    if (raw_slots == RR_NONE)
        return PyObject_GetAttr(raw, name);
    return Py_NewRef(SLOT(raw, raw_slots[which]));
}

static PyObject *
reader_read(Reader *self, PyObject *raw, PyObject *value, const Py_ssize_t *raw_slots);

static PyObject *
Reader_call(Reader *self, PyObject *args, PyObject *kwargs)
{
    PyObject *raw, *value;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Reader takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "Reader", 2, 2, &raw, &value))
        return NULL;
    return reader_read(self, raw, value, RR_NONE);
}

/* The Reader's call: raw's body value read into its Decoded. */
static PyObject *
reader_read(Reader *self, PyObject *raw, PyObject *value, const Py_ssize_t *raw_slots)
{
    if (!PyBytes_CheckExact(value)) {
        PyErr_SetString(self->unread, "value is not bytes");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t size = PyBytes_GET_SIZE(value), pos = 5; /* core.wire.HEADER_SIZE */
    PyObject *fields[MAX_FIELDS] = {NULL};
    PyObject *signal_values[N_SIGNAL] = {NULL};
    PyObject *prov_values[N_PROVENANCE] = {NULL};
    PyObject *signal = NULL, *provenance = NULL, *decoded = NULL, *selectors = NULL;
    Py_ssize_t i;

    for (i = 0; i < self->n_fields; i++) {
        fields[i] = read_field(self, self->kinds[i], self->shared[i], buf, size, &pos);
        if (fields[i] == NULL)
            goto done;
    }
    if (pos != size) {
        unread(self, "trailing bytes");
        goto done;
    }
    for (i = 0; i < N_SIGNAL; i++) {
        int from = self->signal_from[i];
        signal_values[i] = from < 0 ? self->signal_default[i] : fields[from];
    }
    if (self->signal_from[SELECTORS] >= 0) {
        /* tuple(value or ()): a list read from the body. */
        selectors = PyList_AsTuple(signal_values[SELECTORS]);
        if (selectors == NULL)
            goto done;
        signal_values[SELECTORS] = selectors;
    }
    signal = build(self->classes[0], self->signal_set, signal_values, N_SIGNAL);
    if (signal == NULL)
        goto done;

    prov_values[0] = raw_field(raw, raw_slots, RR_TOPIC, s_topic);
    prov_values[1] = prov_values[0] ? raw_field(raw, raw_slots, RR_PARTITION, s_partition) : NULL;
    prov_values[2] = prov_values[1] ? raw_field(raw, raw_slots, RR_OFFSET, s_offset) : NULL;
    prov_values[3] = Py_NewRef(self->schema_id);
    prov_values[4] = prov_values[2] ? input_hash(buf, size) : NULL;
    if (prov_values[4] == NULL)
        goto done;
    provenance = build(self->classes[1], self->provenance_set, prov_values, N_PROVENANCE);
    if (provenance == NULL)
        goto done;

    PyObject *timestamp_ms = raw_field(raw, raw_slots, RR_TIMESTAMP, s_timestamp_ms);
    if (timestamp_ms == NULL)
        goto done;
    PyObject *dec_values[N_DECODED] = {
        signal, provenance, timestamp_ms, raw, self->empty, Py_None, Py_None,
    };
    decoded = build(self->classes[2], self->decoded_set, dec_values, N_DECODED);
    Py_DECREF(timestamp_ms);

done:
    for (i = 0; i < self->n_fields; i++)
        Py_XDECREF(fields[i]);
    for (i = 0; i < N_PROVENANCE; i++)
        Py_XDECREF(prov_values[i]);
    Py_XDECREF(selectors);
    Py_XDECREF(signal);
    Py_XDECREF(provenance);
    return decoded;
}

static int
objects_of(PyObject *seq, Py_ssize_t n, PyObject **out, const char *what)
{
    if (!PyTuple_Check(seq) || PyTuple_GET_SIZE(seq) != n) {
        PyErr_Format(PyExc_TypeError, "%s: a tuple of %zd expected", what, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = Py_NewRef(PyTuple_GET_ITEM(seq, i));
    }
    return 0;
}

static int
setters_of(PyObject *seq, Py_ssize_t n, PyObject **out, const char *what)
{
    if (objects_of(seq, n, out, what) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (Py_TYPE(out[i])->tp_descr_set == NULL) {
            PyErr_Format(PyExc_TypeError, "%s: item %zd is not a data descriptor", what, i);
            return -1;
        }
    }
    return 0;
}

static int
Reader_init(Reader *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"kinds",          "signal_from", "signal_default", "classes",
                            "signal_slots",   "provenance_slots", "decoded_slots", "epoch",
                            "unread",         "schema_id",   "shared",         NULL};
    PyObject *kinds, *from, *defaults, *classes, *sig_set, *prov_set, *dec_set;
    PyObject *epoch, *unread_class, *schema_id, *shared;
    PyObject *cls[3];
    if (self->empty != NULL) {
        PyErr_SetString(PyExc_TypeError, "Reader is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!O!O!O!O!O!OO!O!", names, &PyTuple_Type,
                                     &kinds, &PyTuple_Type, &from, &PyTuple_Type, &defaults,
                                     &PyTuple_Type, &classes, &PyTuple_Type, &sig_set,
                                     &PyTuple_Type, &prov_set, &PyTuple_Type, &dec_set,
                                     PyDateTimeAPI->DateTimeType, &epoch, &unread_class,
                                     &PyLong_Type, &schema_id, &PyTuple_Type, &shared))
        return -1;
    self->epoch = Py_NewRef(epoch);
    self->unix_epoch = PyDateTime_GET_YEAR(epoch) == 1970 && PyDateTime_GET_MONTH(epoch) == 1 &&
                       PyDateTime_GET_DAY(epoch) == 1 && PyDateTime_DATE_GET_HOUR(epoch) == 0 &&
                       PyDateTime_DATE_GET_MINUTE(epoch) == 0 &&
                       PyDateTime_DATE_GET_SECOND(epoch) == 0 &&
                       PyDateTime_DATE_GET_MICROSECOND(epoch) == 0 &&
                       PyDateTime_DATE_GET_FOLD(epoch) == 0;
    self->unread = Py_NewRef(unread_class);
    self->schema_id = Py_NewRef(schema_id);
    self->empty = PyTuple_New(0);
    if (self->empty == NULL)
        return -1;
    self->n_fields = PyTuple_GET_SIZE(kinds);
    if (self->n_fields > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "too many fields");
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->n_fields; i++) {
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(kinds, i));
        if (kind == -1 && PyErr_Occurred())
            return -1;
        if (kind < K_STRING || kind > K_STRINGS) {
            PyErr_Format(PyExc_ValueError, "unknown field kind %ld", kind);
            return -1;
        }
        self->kinds[i] = (int)kind;
    }
    if (PyTuple_GET_SIZE(from) != N_SIGNAL) {
        PyErr_SetString(PyExc_TypeError, "signal_from: a tuple of 8 expected");
        return -1;
    }
    for (int i = 0; i < N_SIGNAL; i++) {
        long f = PyLong_AsLong(PyTuple_GET_ITEM(from, i));
        if (f == -1 && PyErr_Occurred())
            return -1;
        if (f < -1 || f >= self->n_fields) {
            PyErr_Format(PyExc_ValueError, "signal_from[%d]: no field %ld", i, f);
            return -1;
        }
        if (i == SELECTORS && f >= 0 && self->kinds[f] != K_STRINGS) {
            PyErr_SetString(PyExc_ValueError, "selectors must come from an array of string");
            return -1;
        }
        self->signal_from[i] = (int)f;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(shared); i++) {
        long f = PyLong_AsLong(PyTuple_GET_ITEM(shared, i));
        if (f == -1 && PyErr_Occurred())
            return -1;
        if (f < 0 || f >= self->n_fields || self->kinds[f] != K_STRING) {
            PyErr_Format(PyExc_ValueError, "shared: field %ld is not a string", f);
            return -1;
        }
        self->shared[f] = 1;
    }
    if (objects_of(defaults, N_SIGNAL, self->signal_default, "signal_default") < 0 ||
        objects_of(classes, 3, cls, "classes") < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        if (!PyType_Check(cls[i])) {
            PyErr_SetString(PyExc_TypeError, "classes: types expected");
            for (int j = 0; j < 3; j++)
                Py_DECREF(cls[j]);
            return -1;
        }
        self->classes[i] = (PyTypeObject *)cls[i];
    }
    if (setters_of(sig_set, N_SIGNAL, self->signal_set, "signal_slots") < 0 ||
        setters_of(prov_set, N_PROVENANCE, self->provenance_set, "provenance_slots") < 0 ||
        setters_of(dec_set, N_DECODED, self->decoded_set, "decoded_slots") < 0)
        return -1;
    return 0;
}

static int
Reader_traverse(Reader *self, visitproc visit, void *arg)
{
    for (int i = 0; i < N_SIGNAL; i++) {
        Py_VISIT(self->signal_default[i]);
        Py_VISIT(self->signal_set[i]);
    }
    for (int i = 0; i < N_PROVENANCE; i++)
        Py_VISIT(self->provenance_set[i]);
    for (int i = 0; i < N_DECODED; i++)
        Py_VISIT(self->decoded_set[i]);
    for (int i = 0; i < 3; i++)
        Py_VISIT(self->classes[i]);
    Py_VISIT(self->epoch);
    Py_VISIT(self->unread);
    Py_VISIT(self->schema_id);
    Py_VISIT(self->empty);
    return 0;
}

static int
Reader_clear(Reader *self)
{
    for (int i = 0; i < N_SIGNAL; i++) {
        Py_CLEAR(self->signal_default[i]);
        Py_CLEAR(self->signal_set[i]);
    }
    for (int i = 0; i < N_PROVENANCE; i++)
        Py_CLEAR(self->provenance_set[i]);
    for (int i = 0; i < N_DECODED; i++)
        Py_CLEAR(self->decoded_set[i]);
    for (int i = 0; i < 3; i++)
        Py_CLEAR(self->classes[i]);
    Py_CLEAR(self->epoch);
    Py_CLEAR(self->unread);
    Py_CLEAR(self->schema_id);
    Py_CLEAR(self->empty);
    for (int i = 0; i < STR_CACHE; i++)
        Py_CLEAR(self->strings[i]);
    return 0;
}

static void
Reader_dealloc(Reader *self)
{
    PyObject_GC_UnTrack(self);
    Reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "core._native.Reader",
    .tp_doc = PyDoc_STR("Reads one writer's framed signal bodies into Decoded records."),
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_call = (ternaryfunc)Reader_call,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_dealloc = (destructor)Reader_dealloc,
};


/* --- decode: decode_run, SignalDecoder.decode_many's loop (operators/decode.py) ----------- */

/* decode_run(raws, readers, errors, slow, raw_slots) -> list
 *
 * operators.decode.SignalDecoder.decode_many's loop: each record whose error is None and whose
 * value is bytes starting with a header (magic byte and schema id, 5 bytes) readers holds is
 * read by that reader (a C Reader called directly, reading the record's fields at their slots;
 * a compiled Python reader called); a reader's exception of class errors (READ_ERRORS), and
 * every other record, is slow(raw) (SignalDecoder.decode, the reference). A record not exactly
 * of raw_slots' class (RawRecord: topic, partition, offset, timestamp_ms, error, value's
 * member descriptors) is slow(raw) too. The previous record's header and reader are taken
 * without a lookup when its 5 bytes are the same. */
static PyObject *
decode_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyList_Check(args[0]) || !PyDict_Check(args[1]) ||
        !PyTuple_Check(args[4]) || PyTuple_GET_SIZE(args[4]) != RR_SLOTS) {
        PyErr_SetString(PyExc_TypeError, "decode_run: a list, a dict, errors, slow, 6 slots");
        return NULL;
    }
    PyObject *raws = args[0], *readers = args[1], *errors = args[2], *slow = args[3];
    Py_ssize_t raw_slots[RR_SLOTS];
    PyTypeObject *raw_cls = NULL;
    for (int i = 0; i < RR_SLOTS; i++) {
        PyTypeObject *owner;
        if ((raw_slots[i] = slot_offset(PyTuple_GET_ITEM(args[4], i), &owner)) < 0)
            return NULL;
        if (raw_cls != NULL && owner != raw_cls) {
            PyErr_SetString(PyExc_TypeError, "decode_run: the slots of one class");
            return NULL;
        }
        raw_cls = owner;
    }
    PyObject *out = PyList_New(0);
    PyObject *last_key = NULL, *last_reader = NULL; /* the previous lookup's header and reader */
    if (out == NULL)
        return NULL;
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(raws); n++) {
        PyObject *raw = Py_NewRef(PyList_GET_ITEM(raws, n)); /* (a callback may change raws) */
        PyObject *result = NULL, *read = NULL, *value = NULL;
        int plain = Py_IS_TYPE(raw, raw_cls);
        for (int i = 0; plain && i < RR_SLOTS; i++)
            plain = SLOT(raw, raw_slots[i]) != NULL;
        if (plain && SLOT(raw, raw_slots[RR_ERROR]) == Py_None &&
            PyBytes_CheckExact(value = SLOT(raw, raw_slots[RR_VALUE])) &&
            PyBytes_GET_SIZE(value) >= 5) {
            const char *head = PyBytes_AS_STRING(value);
            if (last_key != NULL && memcmp(PyBytes_AS_STRING(last_key), head, 5) == 0) {
                read = Py_NewRef(last_reader);
            } else {
                PyObject *key = PyBytes_FromStringAndSize(head, 5);
                if (key == NULL)
                    goto fail_item;
                PyObject *found = PyDict_GetItemWithError(readers, key); /* borrowed */
                if (found == NULL && PyErr_Occurred()) {
                    Py_DECREF(key);
                    goto fail_item;
                }
                if (found != NULL) {
                    read = Py_NewRef(found);
                    Py_XSETREF(last_key, key);
                    Py_XSETREF(last_reader, Py_NewRef(found));
                } else {
                    Py_DECREF(key);
                }
            }
        }
        if (read != NULL) {
            Py_INCREF(value); /* (a Python reader may drop the record's last other reference) */
            result = Py_IS_TYPE(read, &ReaderType)
                         ? reader_read((Reader *)read, raw, value, raw_slots)
                         : PyObject_CallFunctionObjArgs(read, raw, value, NULL);
            Py_DECREF(value);
            Py_DECREF(read);
            if (result == NULL) {
                if (!PyErr_ExceptionMatches(errors))
                    goto fail_item;
                PyErr_Clear(); /* the reference decides (and names the reason) */
            }
        }
        if (result == NULL && (result = PyObject_CallOneArg(slow, raw)) == NULL)
            goto fail_item;
        Py_DECREF(raw);
        int err = PyList_Append(out, result);
        Py_DECREF(result);
        if (err < 0)
            goto fail;
        continue;
    fail_item:
        Py_DECREF(raw);
        goto fail;
    }
    Py_XDECREF(last_key);
    Py_XDECREF(last_reader);
    return out;
fail:
    Py_XDECREF(last_key);
    Py_XDECREF(last_reader);
    Py_DECREF(out);
    return NULL;
}


/* --- tenant-tag: tag_run's loop (operators/tenancy.py) ------------------------------------ */

static PyObject *s_kafka_partition, *s_kafka_offset;

/* The ASCII bytes of an ASCII str, without a copy (else the error its encoding raises). */
static const char *
ascii_of(PyObject *text, Py_ssize_t *n)
{
    if (!PyUnicode_IS_ASCII(text)) {
        PyObject *failed = PyUnicode_AsASCIIString(text); /* raises UnicodeEncodeError */
        Py_XDECREF(failed);
        if (failed != NULL)
            PyErr_SetString(PyExc_ValueError, "not ASCII");
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(text, n);
}

/* Whether JSON writes the str text as itself between quotes (json's encode_basestring_ascii
 * escapes '"', '\\', and everything outside ' '..'~'): a SHA-256's hex digits always are. */
static int
json_plain(PyObject *text)
{
    if (!PyUnicode_IS_ASCII(text))
        return 0;
    const unsigned char *c = PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t i = 0, n = PyUnicode_GET_LENGTH(text); i < n; i++) {
        if (c[i] < 0x20 || c[i] > 0x7E || c[i] == '"' || c[i] == '\\')
            return 0;
    }
    return 1;
}

/* value's decimal digits into buf (at least 21 bytes), as str(value) writes them: their count. */
static Py_ssize_t
decimal_digits(long long value, char *buf)
{
    char tmp[21];
    int n = 0;
    unsigned long long u = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    Py_ssize_t out = 0;
    if (value < 0)
        buf[out++] = '-';
    while (n > 0)
        buf[out++] = tmp[--n];
    return out;
}

/* The first 32 hex digits of the SHA-256 of the ASCII of
 * '{"input_hash":' + quote(hash) + ',"kafka_offset":' + str(offset) + tail
 * (quote is called only for a hash JSON does not write as itself). */
static PyObject *
short_id(PyObject *hash, PyObject *quote, PyObject *offset, PyObject *tail)
{
    static const char first[] = "{\"input_hash\":", second[] = ",\"kafka_offset\":";
    char digits[32];
    Py_ssize_t nq, nt, nd;
    PyObject *quoted = NULL; /* quote(hash), where it is not the hash between quotes */
    PyObject *text = NULL;   /* str(offset), for an int beyond 64 bits */
    PyObject *out = NULL;
    const char *q, *t, *d = digits;
    int plain = json_plain(hash);
    if (plain) {
        q = PyUnicode_AsUTF8AndSize(hash, &nq);
    } else {
        quoted = PyObject_CallOneArg(quote, hash);
        if (quoted != NULL && !PyUnicode_Check(quoted)) {
            PyErr_SetString(PyExc_TypeError, "tag_run: quote must give a str");
            goto done;
        }
        q = quoted ? ascii_of(quoted, &nq) : NULL;
    }
    if (q == NULL || (t = ascii_of(tail, &nt)) == NULL)
        goto done;
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(offset, &overflow);
    if (value == -1 && PyErr_Occurred())
        goto done;
    if (overflow) {
        if ((text = PyObject_Str(offset)) == NULL || (d = ascii_of(text, &nd)) == NULL)
            goto done;
    } else {
        nd = decimal_digits(value, digits);
    }
    if (digest_begin() == 0 && digest_add(first, sizeof first - 1) == 0 &&
        (!plain || digest_add("\"", 1) == 0) && digest_add(q, (size_t)nq) == 0 &&
        (!plain || digest_add("\"", 1) == 0) && digest_add(second, sizeof second - 1) == 0 &&
        digest_add(d, (size_t)nd) == 0 && digest_add(t, (size_t)nt) == 0)
        out = digest_hex(16);
done:
    Py_XDECREF(quoted);
    Py_XDECREF(text);
    return out;
}

/* What tag_run reads of a record, in this order: Decoded's trace, provenance and signal,
 * Signal's tenant_id, Provenance's topic, kafka_partition, schema_version, kafka_offset and
 * input_hash (readers: their member descriptors, in that order). */
enum { TR_TRACE, TR_PROVENANCE, TR_SIGNAL, TR_TENANT, TR_TOPIC, TR_PARTITION, TR_VERSION,
       TR_OFFSET, TR_HASH, TR_READERS };

/* The (tail, tags) pair of a record's group (tenant, topic, partition, schema version): from
 * groups, else made (tail_of(item), tags_of(tenant) once per tenant per call) and kept there.
 * A new reference, or NULL. */
static PyObject *
tag_group(PyObject *groups, PyObject *tags_by_tenant, PyObject *group, PyObject *item,
          PyObject *tenant, PyObject *tail_of, PyObject *tags_of)
{
    PyObject *held = PyDict_GetItemWithError(groups, group); /* borrowed */
    if (held != NULL)
        return Py_NewRef(held);
    if (PyErr_Occurred())
        return NULL;
    PyObject *tags = PyDict_GetItemWithError(tags_by_tenant, tenant); /* borrowed */
    if (tags == NULL) {
        if (PyErr_Occurred() || (tags = PyObject_CallOneArg(tags_of, tenant)) == NULL)
            return NULL;
        int err = PyDict_SetItem(tags_by_tenant, tenant, tags);
        Py_DECREF(tags); /* the dict holds it */
        if (err < 0)
            return NULL;
    }
    Py_INCREF(tags); /* (a callback below could drop the dict's entry) */
    PyObject *tail = PyObject_CallOneArg(tail_of, item);
    if (tail != NULL && !PyUnicode_Check(tail)) {
        PyErr_SetString(PyExc_TypeError, "tag_run: tail_of must give a str");
        Py_CLEAR(tail);
    }
    PyObject *pair = tail ? PyTuple_Pack(2, tail, tags) : NULL;
    Py_XDECREF(tail);
    Py_DECREF(tags);
    if (pair != NULL && PyDict_SetItem(groups, group, pair) < 0)
        Py_CLEAR(pair);
    return pair;
}

/* tag_run(items, version, tail_of, tags_of, slow, quote, tagged, slots, readers) -> list
 *
 * operators.tenancy.tag_run's loop without sources, the same steps in the same order: a record
 * that is not exactly a Decoded holding exactly a Signal and a Provenance, a traced one, or
 * one whose provenance values are not all of the exact types the canonical JSON is written
 * for, is slow(item) (tag itself, the reference); otherwise its group (tenant, topic,
 * partition, schema version) gives the JSON's tail (tail_of(item), once per group per call)
 * and the tags (tags_of(tenant), once per tenant per call), and its id is the first 32 hex
 * digits of the SHA-256 of '{"input_hash":' + quote(hash) + ',"kafka_offset":' + str(offset) +
 * tail. The fields are read at their slots' offsets (readers: TR_READERS member descriptors,
 * each of its record class), not through attribute lookups (~0.4 of this loop's ~1.1
 * µs a record went to those); a record of the previous record's group (the same objects: the
 * decoder shares a field's equal strings) takes its pair without a lookup. The Tagged is
 * object.__new__(tagged) with its slots (decoded, tags, policy_version, provenance_id) set
 * through their descriptors. */
static PyObject *
tag_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "tag_run takes 9 arguments");
        return NULL;
    }
    PyObject *items = args[0], *version = args[1], *tail_of = args[2], *tags_of = args[3],
             *slow = args[4], *quote = args[5], *slots = args[7], *readers = args[8];
    PyTypeObject *tagged = (PyTypeObject *)args[6];
    if (!PyList_Check(items) || !PyType_Check(args[6]) || !PyTuple_Check(slots) ||
        PyTuple_GET_SIZE(slots) != 4 || !PyTuple_Check(readers) ||
        PyTuple_GET_SIZE(readers) != TR_READERS) {
        PyErr_SetString(PyExc_TypeError,
                        "tag_run: a list, a type, 4 slot descriptors and the readers");
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (Py_TYPE(PyTuple_GET_ITEM(slots, i))->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "tag_run: slots must be data descriptors");
            return NULL;
        }
    }
    PyObject *setters[4];
    for (int i = 0; i < 4; i++)
        setters[i] = PyTuple_GET_ITEM(slots, i);
    Py_ssize_t o[TR_READERS];
    PyTypeObject *owners[TR_READERS];
    for (int i = 0; i < TR_READERS; i++) {
        if ((o[i] = slot_offset(PyTuple_GET_ITEM(readers, i), &owners[i])) < 0)
            return NULL;
    }
    /* each record class's readers are its own */
    PyTypeObject *decoded_cls = owners[TR_TRACE], *signal_cls = owners[TR_TENANT],
                 *provenance_cls = owners[TR_TOPIC];
    for (int i = 0; i < TR_READERS; i++) {
        PyTypeObject *want = i < TR_TENANT ? decoded_cls : i == TR_TENANT ? signal_cls
                                                                          : provenance_cls;
        if (owners[i] != want) {
            PyErr_SetString(PyExc_TypeError, "tag_run: readers of three record classes");
            return NULL;
        }
    }
    PyObject *out = PyList_New(0), *groups = PyDict_New(), *tags_by_tenant = PyDict_New();
    PyObject *last_group = NULL, *last_held = NULL; /* the previous record's group and pair */
    if (out == NULL || groups == NULL || tags_by_tenant == NULL)
        goto fail;
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(items); n++) {
        PyObject *item = PyList_GET_ITEM(items, n);
        Py_INCREF(item); /* the list may change under a callback */
        PyObject *result = NULL, *v[TR_READERS] = {NULL};
        int plain = Py_TYPE(item) == decoded_cls;
        for (int i = TR_TRACE; plain && i <= TR_SIGNAL; i++)
            plain = (v[i] = SLOT(item, o[i])) != NULL;
        plain = plain && v[TR_TRACE] == Py_None &&
                Py_TYPE(v[TR_SIGNAL]) == signal_cls &&
                Py_TYPE(v[TR_PROVENANCE]) == provenance_cls &&
                (v[TR_TENANT] = SLOT(v[TR_SIGNAL], o[TR_TENANT])) != NULL;
        for (int i = TR_TOPIC; plain && i < TR_READERS; i++)
            plain = (v[i] = SLOT(v[TR_PROVENANCE], o[i])) != NULL;
        if (!plain ||
            !(PyLong_CheckExact(v[TR_PARTITION]) && PyLong_CheckExact(v[TR_OFFSET]) &&
              PyLong_CheckExact(v[TR_VERSION]) && PyUnicode_CheckExact(v[TR_HASH]) &&
              PyUnicode_CheckExact(v[TR_TOPIC]) && PyUnicode_CheckExact(v[TR_TENANT]))) {
            result = PyObject_CallOneArg(slow, item);
            goto item_done;
        }
        /* (the group's values are held by its tuple, the hash and offset here: a callback
         * below, tags_of, tail_of or quote, is Python) */
        PyObject *hash = Py_NewRef(v[TR_HASH]), *offset = Py_NewRef(v[TR_OFFSET]);
        if (last_group == NULL || PyTuple_GET_ITEM(last_group, 0) != v[TR_TENANT] ||
            PyTuple_GET_ITEM(last_group, 1) != v[TR_TOPIC] ||
            PyTuple_GET_ITEM(last_group, 2) != v[TR_PARTITION] ||
            PyTuple_GET_ITEM(last_group, 3) != v[TR_VERSION]) {
            PyObject *group =
                PyTuple_Pack(4, v[TR_TENANT], v[TR_TOPIC], v[TR_PARTITION], v[TR_VERSION]);
            PyObject *held = group ? tag_group(groups, tags_by_tenant, group, item,
                                               PyTuple_GET_ITEM(group, 0), tail_of, tags_of)
                                   : NULL;
            if (held == NULL) {
                Py_XDECREF(group);
                Py_DECREF(hash);
                Py_DECREF(offset);
                goto item_done;
            }
            Py_XSETREF(last_group, group);
            Py_XSETREF(last_held, held);
        }
        PyObject *id = short_id(hash, quote, offset, PyTuple_GET_ITEM(last_held, 0));
        Py_DECREF(hash);
        Py_DECREF(offset);
        if (id != NULL) {
            PyObject *values[4] = {item, PyTuple_GET_ITEM(last_held, 1), version, id};
            result = build(tagged, setters, values, 4);
            Py_DECREF(id);
        }
    item_done:
        Py_DECREF(item);
        if (result == NULL)
            goto fail;
        int err = PyList_Append(out, result);
        Py_DECREF(result);
        if (err < 0)
            goto fail;
    }
    Py_DECREF(groups);
    Py_DECREF(tags_by_tenant);
    Py_XDECREF(last_group);
    Py_XDECREF(last_held);
    return out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(groups);
    Py_XDECREF(tags_by_tenant);
    Py_XDECREF(last_group);
    Py_XDECREF(last_held);
    return NULL;
}


/* --- the Kafka source: _Partition._records's common message (sources/kafka.py) ------------- */

static PyObject *s_error, *s_key, *s_value, *s_timestamp, *s_headers;

/* raw_records(msgs, start, topic, partition, end, cls, slots, headers_of, out) -> int
 *
 * From msgs[start] on, each common message (no error, an offset o with 0 <= o < end) becomes
 * cls(topic, partition, o, key, value, stamp if stamp > 0 else None, None, headers) appended to
 * out, where headers is headers_of(h) for a non-empty h, else (); built with object.__new__ and
 * each slot set through its descriptor (slots: the 8 fields in that order). Returns the index
 * of the first message that is not common (the caller's reference takes it), or len(msgs). */
static PyObject *
raw_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "raw_records takes 9 arguments");
        return NULL;
    }
    PyObject *msgs = args[0], *topic = args[2], *partition = args[3], *end = args[4],
             *slots = args[6], *headers_of = args[7], *out = args[8];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_Check(msgs) || !PyList_Check(out) || !PyType_Check(args[5]) ||
        !PyTuple_Check(slots) || PyTuple_GET_SIZE(slots) != 8 || start < 0) {
        PyErr_SetString(PyExc_TypeError, "raw_records: lists, a type and 8 slot descriptors");
        return NULL;
    }
    PyObject *setters[8];
    for (int i = 0; i < 8; i++) {
        setters[i] = PyTuple_GET_ITEM(slots, i);
        if (Py_TYPE(setters[i])->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "raw_records: slots must be data descriptors");
            return NULL;
        }
    }
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    Py_ssize_t n = start;
    for (; n < PyList_GET_SIZE(msgs); n++) {
        PyObject *msg = PyList_GET_ITEM(msgs, n);
        Py_INCREF(msg);
        PyObject *error = NULL, *offset = NULL, *stamp = NULL, *headers = NULL, *key = NULL,
                 *value = NULL, *record = NULL;
        int common = 0, failed = 1;
        if ((error = PyObject_CallMethodNoArgs(msg, s_error)) == NULL)
            goto next;
        if (error != Py_None) {
            failed = 0;
            goto next;
        }
        if ((offset = PyObject_CallMethodNoArgs(msg, s_offset)) == NULL)
            goto next;
        if (offset == Py_None) {
            failed = 0;
            goto next;
        }
        int low = PyObject_RichCompareBool(zero, offset, Py_LE);
        int high = low == 1 ? PyObject_RichCompareBool(offset, end, Py_LT) : low;
        if (low < 0 || high < 0)
            goto next;
        if (!(low && high)) {
            failed = 0;
            goto next;
        }
        PyObject *pair = PyObject_CallMethodNoArgs(msg, s_timestamp);
        if (pair == NULL)
            goto next;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "raw_records: a timestamp pair expected");
            Py_DECREF(pair);
            goto next;
        }
        stamp = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
        Py_DECREF(pair);
        int positive = PyObject_RichCompareBool(stamp, zero, Py_GT);
        if (positive < 0)
            goto next;
        if (!positive)
            Py_SETREF(stamp, Py_NewRef(Py_None));
        if ((headers = PyObject_CallMethodNoArgs(msg, s_headers)) == NULL)
            goto next;
        int some = PyObject_IsTrue(headers);
        if (some < 0)
            goto next;
        Py_SETREF(headers, some ? PyObject_CallOneArg(headers_of, headers) : PyTuple_New(0));
        if (headers == NULL)
            goto next;
        if ((key = PyObject_CallMethodNoArgs(msg, s_key)) == NULL ||
            (value = PyObject_CallMethodNoArgs(msg, s_value)) == NULL)
            goto next;
        PyObject *values[8] = {topic, partition, offset, key, value, stamp, Py_None, headers};
        record = build((PyTypeObject *)args[5], setters, values, 8);
        if (record == NULL)
            goto next;
        if (PyList_Append(out, record) < 0)
            goto next;
        common = 1;
        failed = 0;
    next:
        Py_XDECREF(error);
        Py_XDECREF(offset);
        Py_XDECREF(stamp);
        Py_XDECREF(headers);
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(record);
        Py_DECREF(msg);
        if (failed) {
            Py_DECREF(zero);
            return NULL;
        }
        if (!common)
            break;
    }
    Py_DECREF(zero);
    return PyLong_FromSsize_t(n);
}

/* Days from 1970-01-01 to the proleptic Gregorian date y-m-d (H. Hinnant's days_from_civil),
 * shared by the sections that turn a datetime's fields into microseconds. */
static long long
days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* A datetime.UTC datetime's microseconds since the epoch (what (at - _EPOCH) // 1 µs gives:
 * both of tzinfo datetime.UTC, the difference of their fields): 1, or 0 for anything else.
 * dedupe's, score's and the graph sink's times. */
static int
utc_micros(PyObject *at, long long *out)
{
    if (at == NULL || !PyDateTime_CheckExact(at) ||
        PyDateTime_DATE_GET_TZINFO(at) != PyDateTime_TimeZone_UTC)
        return 0;
    long long days = days_from_civil(PyDateTime_GET_YEAR(at), PyDateTime_GET_MONTH(at),
                                     PyDateTime_GET_DAY(at));
    long long seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(at) * 3600 +
                        PyDateTime_DATE_GET_MINUTE(at) * 60 + PyDateTime_DATE_GET_SECOND(at);
    *out = seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(at);
    return 1;
}

/* === dedupe: dedupe_run, the batch check's clean path (operators/dedupe.py) ================ */

static PyObject *s_dd_keys, *s_dd_heap, *s_dd_newest, *s_dd_horizon, *s_dd_ttl, *s_dd_tenant,
    *s_dd_seen, *s_dd_duplicates;

/* The names of TenantDedupe's slots, made at the first call. */
static int
dedupe_names(void)
{
    if (s_dd_duplicates != NULL)
        return 0;
    if ((s_dd_keys = PyUnicode_InternFromString("_keys")) == NULL ||
        (s_dd_heap = PyUnicode_InternFromString("_heap")) == NULL ||
        (s_dd_newest = PyUnicode_InternFromString("_newest")) == NULL ||
        (s_dd_horizon = PyUnicode_InternFromString("_horizon")) == NULL ||
        (s_dd_ttl = PyUnicode_InternFromString("_ttl")) == NULL ||
        (s_dd_tenant = PyUnicode_InternFromString("_tenant")) == NULL ||
        (s_dd_seen = PyUnicode_InternFromString("_seen")) == NULL ||
        (s_dd_duplicates = PyUnicode_InternFromString("_duplicates")) == NULL)
        return -1;
    return 0;
}

/* The byte offset of the object slot a member descriptor of exactly cls reads, or -1 (no
 * exception set). */
static Py_ssize_t
dedupe_slot(PyObject *descr, PyObject *cls)
{
    PyTypeObject *owner;
    Py_ssize_t offset = slot_offset(descr, &owner);
    if (offset < 0 || owner != (PyTypeObject *)cls) {
        PyErr_Clear();
        return -1;
    }
    return offset;
}

/* |micros| below 2**62: the horizon's arithmetic (ts - ttl) cannot overflow 64 bits. */
#define DD_BOUND ((long long)1 << 62)

/* An int state field: 1 and *out for an int within DD_BOUND, 0 for None, -1 for anything else
 * (no exception set). */
static int
dedupe_int(PyObject *value, long long *out)
{
    if (value == Py_None)
        return 0;
    return exact_int64(value, out) && *out > -DD_BOUND && *out < DD_BOUND ? 1 : -1;
}

/* state._newest and state._horizon set to the loop's (what the Python loop assigns as it goes). */
static int
dedupe_store(PyObject *state, int has_newest, long long newest, int has_horizon,
             long long horizon)
{
    PyObject *value;
    if (has_newest) {
        if ((value = PyLong_FromLongLong(newest)) == NULL)
            return -1;
        int err = PyObject_SetAttr(state, s_dd_newest, value);
        Py_DECREF(value);
        if (err < 0)
            return -1;
    }
    if (has_horizon) {
        if ((value = PyLong_FromLongLong(horizon)) == NULL)
            return -1;
        int err = PyObject_SetAttr(state, s_dd_horizon, value);
        Py_DECREF(value);
        if (err < 0)
            return -1;
    }
    return 0;
}

/* state.<name> += by */
static int
dedupe_add(PyObject *state, PyObject *name, Py_ssize_t by)
{
    PyObject *held = PyObject_GetAttr(state, name);
    PyObject *step = held ? PyLong_FromSsize_t(by) : NULL;
    PyObject *sum = step ? PyNumber_Add(held, step) : NULL;
    int err = sum ? PyObject_SetAttr(state, name, sum) : -1;
    Py_XDECREF(held);
    Py_XDECREF(step);
    Py_XDECREF(sum);
    return err;
}

/* heapq's heappush and heappop on the state's heap (Modules/_heapqmodule.c of CPython 3.11, the
 * same steps, so the same list), with one shortcut in the comparison: two tuples whose first
 * items are ints that differ compare as those ints (what tuple's < decides then); anything else
 * is PyObject_RichCompareBool(a, b, Py_LT), the list's items held meanwhile and its size
 * checked after it, as heapq does. */
static int
dedupe_lt(PyObject *a, PyObject *b)
{
    if (PyTuple_CheckExact(a) && PyTuple_CheckExact(b) && PyTuple_GET_SIZE(a) > 0 &&
        PyTuple_GET_SIZE(b) > 0) {
        PyObject *x = PyTuple_GET_ITEM(a, 0), *y = PyTuple_GET_ITEM(b, 0);
        if (PyLong_CheckExact(x) && PyLong_CheckExact(y)) {
            int ox = 0, oy = 0;
            long long vx = PyLong_AsLongLongAndOverflow(x, &ox);
            long long vy = PyLong_AsLongLongAndOverflow(y, &oy);
            if (!ox && !oy && vx != vy)
                return vx < vy;
        }
    }
    Py_INCREF(a);
    Py_INCREF(b);
    int cmp = PyObject_RichCompareBool(a, b, Py_LT);
    Py_DECREF(a);
    Py_DECREF(b);
    return cmp;
}

static int
dedupe_siftdown(PyListObject *heap, Py_ssize_t startpos, Py_ssize_t pos)
{
    Py_ssize_t size = PyList_GET_SIZE(heap);
    if (pos >= size) {
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return -1;
    }
    PyObject **arr = heap->ob_item;
    PyObject *newitem = arr[pos];
    while (pos > startpos) {
        Py_ssize_t parentpos = (pos - 1) >> 1;
        PyObject *parent = arr[parentpos];
        int cmp = dedupe_lt(newitem, parent);
        if (cmp < 0)
            return -1;
        if (size != PyList_GET_SIZE(heap)) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size during iteration");
            return -1;
        }
        if (cmp == 0)
            break;
        arr = heap->ob_item;
        parent = arr[parentpos];
        newitem = arr[pos];
        arr[parentpos] = newitem;
        arr[pos] = parent;
        pos = parentpos;
    }
    return 0;
}

static int
dedupe_siftup(PyListObject *heap, Py_ssize_t pos)
{
    Py_ssize_t endpos = PyList_GET_SIZE(heap), startpos = pos;
    if (pos >= endpos) {
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return -1;
    }
    PyObject **arr = heap->ob_item;
    Py_ssize_t limit = endpos >> 1; /* the smallest pos without a child */
    while (pos < limit) {
        Py_ssize_t childpos = 2 * pos + 1; /* the smaller child's */
        if (childpos + 1 < endpos) {
            int cmp = dedupe_lt(arr[childpos], arr[childpos + 1]);
            if (cmp < 0)
                return -1;
            childpos += ((unsigned)cmp ^ 1);
            arr = heap->ob_item;
            if (endpos != PyList_GET_SIZE(heap)) {
                PyErr_SetString(PyExc_RuntimeError, "list changed size during iteration");
                return -1;
            }
        }
        PyObject *tmp1 = arr[childpos], *tmp2 = arr[pos];
        arr[childpos] = tmp2;
        arr[pos] = tmp1;
        pos = childpos;
    }
    return dedupe_siftdown(heap, startpos, pos);
}

/* heapq.heappush(heap, item) */
static int
dedupe_push(PyObject *heap, PyObject *item)
{
    if (PyList_Append(heap, item) < 0)
        return -1;
    return dedupe_siftdown((PyListObject *)heap, 0, PyList_GET_SIZE(heap) - 1);
}

/* heapq.heappop(heap): a new reference */
static PyObject *
dedupe_pop(PyObject *heap)
{
    Py_ssize_t n = PyList_GET_SIZE(heap);
    if (n == 0) {
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return NULL;
    }
    PyObject *lastelt = Py_NewRef(PyList_GET_ITEM(heap, n - 1));
    if (PyList_SetSlice(heap, n - 1, n, NULL) < 0) {
        Py_DECREF(lastelt);
        return NULL;
    }
    n--;
    if (!n)
        return lastelt;
    PyObject *returnitem = PyList_GET_ITEM(heap, 0);
    PyList_SET_ITEM(heap, 0, lastelt);
    if (dedupe_siftup((PyListObject *)heap, 0) < 0) {
        Py_DECREF(returnitem);
        return NULL;
    }
    return returnitem;
}

/* dedupe_run(state, items, micros, late_reject, decoded, signal, slots) -> (out, dups, late)
 *                                                                          or None
 *
 * operators.dedupe._dedupe_columns in C, the same steps in the same order. First, changing
 * nothing, it checks the batch (None for any batch it leaves to the Python paths): items
 * exactly of class decoded (trace None, signal exactly of class signal), one tenant, the
 * state's if it has one, tenant_id, source and signal_id exact strs, and every ts converted to
 * microseconds since the epoch: a datetime whose tzinfo is datetime.UTC (the decoder's) by
 * integer arithmetic on its fields (ts - _EPOCH then ignores utcoffset and fold), any other
 * through micros(ts), the reference's _micros (its TypeError or OverflowError: None); the state's
 * ttl, newest and horizon ints (or None) and all times below 2**62 in magnitude. Then, per
 * record: W and the horizon moved as TenantDedupe._advance moves them (evicting with heapq's
 * steps, dedupe_pop), a LATE record's late_reject(item, state) with state._newest and _horizon
 * current, a held key (ts, source, signal_id) counted as a duplicate, a new one held with its
 * source interned (sys.intern) in state._keys and pushed on state._heap (dedupe_push).
 * slots: the member descriptors of decoded's signal and trace and of signal's tenant_id, ts,
 * source and signal_id. */
static PyObject *
dedupe_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "dedupe_run takes 7 arguments");
        return NULL;
    }
    PyObject *state = args[0], *micros_of = args[2], *late_of = args[3], *decoded = args[4],
             *signal_cls = args[5], *slots = args[6];
    if (!PyList_Check(args[1]) || !PyType_Check(decoded) || !PyType_Check(signal_cls) ||
        !PyTuple_Check(slots) || PyTuple_GET_SIZE(slots) != 6) {
        PyErr_SetString(PyExc_TypeError, "dedupe_run: a list, 2 types and 6 slot descriptors");
        return NULL;
    }
    Py_ssize_t at[6];
    for (int i = 0; i < 6; i++) {
        at[i] = dedupe_slot(PyTuple_GET_ITEM(slots, i), i < 2 ? decoded : signal_cls);
        if (at[i] < 0) {
            PyErr_SetString(PyExc_TypeError, "dedupe_run: slots must be the classes' members");
            return NULL;
        }
    }
    const Py_ssize_t o_signal = at[0], o_trace = at[1], o_tenant = at[2], o_ts = at[3],
                     o_source = at[4], o_id = at[5];
    if (dedupe_names() < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(args[1]);
    if (n == 0)
        return Py_BuildValue("([]ii)", 0, 0);
    PyObject *items = PyList_AsTuple(args[1]); /* a callback cannot change what is checked */
    PyObject *keys = NULL, *heap = NULL, *held = NULL, *out = NULL, *key = NULL;
    long long *micros = NULL, newest = 0, horizon = 0, ttl = 0;
    int has_newest = 0, has_horizon = 0, looping = 0;
    PyObject *result = NULL;
    if (items == NULL)
        return NULL;
    if ((micros = PyMem_Malloc(sizeof(long long) * (size_t)n)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* the state, as the Python loop reads it into locals */
    if ((keys = PyObject_GetAttr(state, s_dd_keys)) == NULL ||
        (heap = PyObject_GetAttr(state, s_dd_heap)) == NULL)
        goto done;
    if (!PyDict_CheckExact(keys) || !PyList_CheckExact(heap))
        goto unusual;
    if ((held = PyObject_GetAttr(state, s_dd_ttl)) == NULL)
        goto done;
    int kind = dedupe_int(held, &ttl);
    Py_CLEAR(held);
    if (kind != 1 || ttl < 0)
        goto unusual;
    if ((held = PyObject_GetAttr(state, s_dd_newest)) == NULL)
        goto done;
    has_newest = dedupe_int(held, &newest);
    Py_CLEAR(held);
    if ((held = PyObject_GetAttr(state, s_dd_horizon)) == NULL)
        goto done;
    has_horizon = dedupe_int(held, &horizon);
    Py_CLEAR(held);
    if (has_newest < 0 || has_horizon < 0 || has_newest != has_horizon)
        goto unusual; /* W without a horizon: the reference's assert says so */
    if ((held = PyObject_GetAttr(state, s_dd_tenant)) == NULL)
        goto done;
    /* the batch: one tenant (the state's), untraced, of the exact classes and strs */
    PyObject *tenant = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (Py_TYPE(item) != (PyTypeObject *)decoded || SLOT(item, o_trace) != Py_None)
            goto unusual;
        PyObject *signal = SLOT(item, o_signal);
        if (signal == NULL || Py_TYPE(signal) != (PyTypeObject *)signal_cls)
            goto unusual;
        PyObject *its = SLOT(signal, o_tenant), *source = SLOT(signal, o_source),
                 *id = SLOT(signal, o_id);
        if (its == NULL || source == NULL || id == NULL || SLOT(signal, o_ts) == NULL ||
            !PyUnicode_CheckExact(its) || !PyUnicode_CheckExact(source) ||
            !PyUnicode_CheckExact(id))
            goto unusual;
        if (tenant == NULL)
            tenant = its;
        else if (its != tenant && PyUnicode_Compare(its, tenant) != 0)
            goto unusual;
    }
    if (held != Py_None &&
        !(PyUnicode_CheckExact(held) && (held == tenant || PyUnicode_Compare(held, tenant) == 0)))
        goto unusual;
    /* the times (a micros call may run any tzinfo's code: the signals are held by items) */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *signal = SLOT(PyTuple_GET_ITEM(items, i), o_signal);
        PyObject *ts = signal && Py_TYPE(signal) == (PyTypeObject *)signal_cls
                           ? SLOT(signal, o_ts)
                           : NULL;
        if (ts == NULL)
            goto unusual;
        if (utc_micros(ts, &micros[i]))
            continue;
        Py_INCREF(ts);
        PyObject *value = PyObject_CallOneArg(micros_of, ts);
        Py_DECREF(ts);
        if (value == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError) ||
                PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                goto unusual;
            }
            goto done;
        }
        kind = dedupe_int(value, &micros[i]);
        Py_DECREF(value);
        if (kind != 1)
            goto unusual;
    }
    if (held == Py_None) {
        PyObject *first = SLOT(SLOT(PyTuple_GET_ITEM(items, 0), o_signal), o_tenant);
        Py_INCREF(first);
        int err = PyObject_SetAttr(state, s_dd_tenant, first);
        Py_DECREF(first);
        if (err < 0)
            goto done;
    }
    Py_CLEAR(held);
    /* the loop */
    if ((out = PyList_New(0)) == NULL)
        goto done;
    looping = 1;
    Py_ssize_t duplicates = 0, late = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        long long ts = micros[i];
        if (!has_newest || ts > newest) {
            newest = ts;
            has_newest = 1;
            long long edge = ts - ttl;
            if (!has_horizon || edge > horizon) {
                horizon = edge;
                has_horizon = 1;
                /* while heap and heap[0][0] < edge: del keys[heappop(heap)] */
                PyObject *bound = NULL;
                while (PyList_GET_SIZE(heap) > 0) {
                    PyObject *oldest = PyList_GET_ITEM(heap, 0);
                    if (PyTuple_CheckExact(oldest) && PyTuple_GET_SIZE(oldest) > 0 &&
                        PyLong_CheckExact(PyTuple_GET_ITEM(oldest, 0))) {
                        int overflow = 0;
                        long long first =
                            PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(oldest, 0), &overflow);
                        if (!overflow && !(first < edge))
                            break;
                        if (overflow && !(overflow < 0))
                            break;
                    } else {
                        /* anything else compares as Python compares it */
                        if (bound == NULL && (bound = PyLong_FromLongLong(edge)) == NULL)
                            goto done;
                        Py_INCREF(oldest);
                        PyObject *head = PySequence_GetItem(oldest, 0);
                        Py_DECREF(oldest);
                        int below = head ? PyObject_RichCompareBool(head, bound, Py_LT) : -1;
                        Py_XDECREF(head);
                        if (below < 0) {
                            Py_DECREF(bound);
                            goto done;
                        }
                        if (!below)
                            break;
                    }
                    PyObject *gone = dedupe_pop(heap);
                    int err = gone ? PyDict_DelItem(keys, gone) : -1;
                    Py_XDECREF(gone);
                    if (err < 0) {
                        Py_XDECREF(bound);
                        goto done;
                    }
                }
                Py_XDECREF(bound);
            }
        }
        if (ts < horizon) {
            late++;
            if (dedupe_store(state, has_newest, newest, has_horizon, horizon) < 0)
                goto done;
            PyObject *reject = PyObject_CallFunctionObjArgs(late_of, item, state, NULL);
            int err = reject ? PyList_Append(out, reject) : -1;
            Py_XDECREF(reject);
            if (err < 0)
                goto done;
            continue;
        }
        PyObject *signal = SLOT(item, o_signal);
        PyObject *source, *id;
        if (signal == NULL || Py_TYPE(signal) != (PyTypeObject *)signal_cls ||
            (source = SLOT(signal, o_source)) == NULL || (id = SLOT(signal, o_id)) == NULL) {
            /* a callback (a tzinfo's, late_reject) took them away */
            PyErr_SetString(PyExc_AttributeError, "dedupe_run: a signal lost its fields");
            goto done;
        }
        PyObject *when = PyLong_FromLongLong(ts);
        if (when == NULL || (key = PyTuple_New(3)) == NULL) {
            Py_XDECREF(when);
            goto done;
        }
        PyTuple_SET_ITEM(key, 0, when);
        PyTuple_SET_ITEM(key, 1, Py_NewRef(source));
        PyTuple_SET_ITEM(key, 2, Py_NewRef(id));
        int found = PyDict_Contains(keys, key);
        if (found < 0)
            goto done;
        if (found) {
            duplicates++;
            Py_CLEAR(key);
            continue;
        }
        /* key = (ts, sys.intern(source), signal_id): the fresh tuple is only ours */
        PyObject *interned = Py_NewRef(source);
        PyUnicode_InternInPlace(&interned);
        PyObject *was = PyTuple_GET_ITEM(key, 1);
        PyTuple_SET_ITEM(key, 1, interned);
        Py_DECREF(was);
        if (PyDict_SetItem(keys, key, Py_None) < 0)
            goto done;
        if (dedupe_push(heap, key) < 0)
            goto done;
        Py_CLEAR(key);
        if (PyList_Append(out, item) < 0)
            goto done;
    }
    looping = 0;
    if (dedupe_store(state, has_newest, newest, has_horizon, horizon) < 0 ||
        dedupe_add(state, s_dd_seen, n) < 0 || dedupe_add(state, s_dd_duplicates, duplicates) < 0)
        goto done;
    result = Py_BuildValue("(Onn)", out, duplicates, late);
    goto done;
unusual:
    result = Py_NewRef(Py_None);
done:
    if (looping) {
        /* an error in the loop: the state as the Python loop leaves it (its W and horizon) */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (dedupe_store(state, has_newest, newest, has_horizon, horizon) < 0)
            PyErr_Clear();
        PyErr_Restore(type, value, traceback);
    }
    PyMem_Free(micros);
    Py_DECREF(items);
    Py_XDECREF(keys);
    Py_XDECREF(heap);
    Py_XDECREF(held);
    Py_XDECREF(out);
    Py_XDECREF(key);
    return result;
}

#undef DD_BOUND

/* === end of dedupe ======================================================================== */
/* ======================================================================================
 * drift (branch driftstate, session 18): per close of a batch, the PSI, the KS bound and the
 * pooled bin counts of operators/drift_stats.py (psi_terms, ks_bound, cuts_below: ten map
 * chains, a merge and a bisection per edge in Python, ~40% of the step with the KS); per
 * release, push_batch's horizon copy (with_horizon). The same operations in the same order
 * as their Python references. The three statistics only ever accept: anything unusual (not
 * a float or an int, an int past int64, a product that would overflow, a logarithm Python
 * would refuse, a NaN) returns None and the Python reference decides.
 * ====================================================================================== */

static PyObject *drift_fsum; /* math.fsum, imported at the first call (never released) */
/* (log, isnan, isfinite: <math.h>, which Python.h includes) */

/* The PSI of a sample of n values with these cuts (k = bins - 1 of them), in proportions'
 * bins: _psi_of_python's fsum over bins of (share - p) * ln(share / p), share = (count +
 * smoothing) / total, count = cut - cut before (0 before the first, n after the last). x86-64
 * has no FMA without -march flags, so (share - p) * log(...) rounds twice, as Python's float ops
 * do. 1: *out is the PSI (a new reference); 0: the input is unusual (nothing set: the reference
 * decides); -1: an error is set. */
static int
psi_value(PyObject *proportions, const long long *cuts, Py_ssize_t k, long long n, double total,
          double smoothing, PyObject **out)
{
    Py_ssize_t bins = PyTuple_GET_SIZE(proportions);
    if (k + 1 != bins || n > (1LL << 52) || n < 0 || total == 0.0)
        return 0;
    if (drift_fsum == NULL) {
        PyObject *math = PyImport_ImportModule("math");
        if (math == NULL)
            return -1;
        drift_fsum = PyObject_GetAttrString(math, "fsum");
        Py_DECREF(math);
        if (drift_fsum == NULL)
            return -1;
    }
    PyObject *terms = PyList_New(bins);
    if (terms == NULL)
        return -1;
    long long before = 0;
    for (Py_ssize_t i = 0; i < bins; i++) {
        long long cut = i < bins - 1 ? cuts[i] : n;
        if (cut > (1LL << 52) || cut < -(1LL << 52))
            goto unusual;
        PyObject *pobj = PyTuple_GET_ITEM(proportions, i);
        if (!PyFloat_CheckExact(pobj))
            goto unusual;
        double p = PyFloat_AS_DOUBLE(pobj);
        /* int + float: the int as a double (exact below 2**53), then the sum. */
        double share = ((double)(cut - before) + smoothing) / total;
        if (p == 0.0)
            goto unusual; /* Python raises ZeroDivisionError */
        double ratio = share / p;
        if (!(ratio > 0.0) || !isfinite(ratio))
            goto unusual; /* math.log refuses it, or gives inf/nan: the reference says */
        PyObject *term = PyFloat_FromDouble((share - p) * log(ratio));
        if (term == NULL) {
            Py_DECREF(terms);
            return -1;
        }
        PyList_SET_ITEM(terms, i, term);
        before = cut;
    }
    *out = PyObject_CallOneArg(drift_fsum, terms);
    Py_DECREF(terms);
    return *out == NULL ? -1 : 1;
unusual:
    Py_DECREF(terms); /* (unset items are NULL: list_dealloc skips them) */
    return 0;
}

/* A list of plain ints, each within int64, into out (at most max of them): 1, else 0 (too
 * many, another type, past int64; no error left set). */
static int
drift_int_array(PyObject *list, long long *out, Py_ssize_t max)
{
    if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) > max)
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++)
        if (!exact_int64(PyList_GET_ITEM(list, i), &out[i]))
            return 0;
    return 1;
}

enum { KS_BOUND_MAX = 256 };

/* psi_terms(proportions, cuts, n, total, smoothing) -> float | None: psi_value of a list of
 * cuts (the reference's arguments). */
static PyObject *
psi_terms(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "psi_terms takes 5 arguments");
        return NULL;
    }
    PyObject *proportions = args[0], *cuts = args[1];
    if (!PyTuple_CheckExact(proportions) || !PyList_CheckExact(cuts) ||
        !PyLong_CheckExact(args[2]) || !PyFloat_CheckExact(args[3]) ||
        !PyFloat_CheckExact(args[4]))
        Py_RETURN_NONE;
    long long n, c[KS_BOUND_MAX];
    if (!exact_int64(args[2], &n) || !drift_int_array(cuts, c, KS_BOUND_MAX))
        Py_RETURN_NONE;
    PyObject *out = NULL;
    int got = psi_value(proportions, c, PyList_GET_SIZE(cuts), n, PyFloat_AS_DOUBLE(args[3]),
                        PyFloat_AS_DOUBLE(args[4]), &out);
    if (got < 0)
        return NULL;
    if (got == 0)
        Py_RETURN_NONE;
    return out;
}

/* _ks_cannot_fire's integer bound, max over bins of max(R_j+1 * m - P_j * n, P_j+1 * n - R_j *
 * m) with r = [0, R_1, ..., n] (nb of them) and P = [0, *cuts, m], as the two map chains of the
 * reference (pairs up to the shorter list). 1: *out is the bound; 0: unusual (an empty max, a
 * product past int64). */
static int
ks_bound_of(const long long *r, Py_ssize_t nb, const long long *cuts, Py_ssize_t nc,
            long long m, long long n, long long *out)
{
    if (nb < 1 || nb > KS_BOUND_MAX || nc > KS_BOUND_MAX)
        return 0;
    long long s[KS_BOUND_MAX + 2], bound = 0;
    s[0] = 0;
    s[nc + 1] = m;
    for (Py_ssize_t i = 0; i < nc; i++)
        s[i + 1] = cuts[i];
    Py_ssize_t ns = nc + 2;
    /* above = below[1:] against sample_below; sample_below[1:] against below */
    Py_ssize_t k1 = nb - 1 < ns ? nb - 1 : ns, k2 = ns - 1 < nb ? ns - 1 : nb;
    if (k1 == 0 || k2 == 0)
        return 0; /* max() of nothing: the reference raises */
    for (Py_ssize_t j = 0; j < k1 + k2; j++) {
        long long a, b, x, y, d;
        if (j < k1) {
            a = r[j + 1], b = s[j];
            if (__builtin_mul_overflow(a, m, &x) || __builtin_mul_overflow(b, n, &y) ||
                __builtin_sub_overflow(x, y, &d))
                return 0;
        } else {
            a = s[j - k1 + 1], b = r[j - k1];
            if (__builtin_mul_overflow(a, n, &x) || __builtin_mul_overflow(b, m, &y) ||
                __builtin_sub_overflow(x, y, &d))
                return 0;
        }
        if (j == 0 || d > bound)
            bound = d;
    }
    *out = bound;
    return 1;
}

/* ks_bound(below, cuts, m, n) -> int | None: ks_bound_of of lists (the reference's
 * arguments). */
static PyObject *
ks_bound(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "ks_bound takes 4 arguments");
        return NULL;
    }
    PyObject *below = args[0], *cuts = args[1];
    if (!PyList_CheckExact(below) || !PyList_CheckExact(cuts) || !PyLong_CheckExact(args[2]) ||
        !PyLong_CheckExact(args[3]))
        Py_RETURN_NONE;
    long long m, n, r[KS_BOUND_MAX], c[KS_BOUND_MAX], bound;
    if (!exact_int64(args[2], &m) || !exact_int64(args[3], &n) ||
        !drift_int_array(below, r, KS_BOUND_MAX) || !drift_int_array(cuts, c, KS_BOUND_MAX) ||
        !ks_bound_of(r, PyList_GET_SIZE(below), c, PyList_GET_SIZE(cuts), m, n, &bound))
        Py_RETURN_NONE;
    return PyLong_FromLongLong(bound);
}
enum { CUTS_MAX_EDGES = 256 };

/* A tuple of at most CUTS_MAX_EDGES strictly increasing floats, no NaN, into e, and diff[0..k]
 * zeroed: k, else -1 (no exception set). */
static Py_ssize_t
drift_edges(PyObject *edges, double *e, Py_ssize_t *diff)
{
    if (!PyTuple_CheckExact(edges) || PyTuple_GET_SIZE(edges) > CUTS_MAX_EDGES)
        return -1;
    Py_ssize_t k = PyTuple_GET_SIZE(edges);
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *x = PyTuple_GET_ITEM(edges, j);
        if (!PyFloat_CheckExact(x))
            return -1;
        e[j] = PyFloat_AS_DOUBLE(x);
        if (isnan(e[j]) || (j > 0 && !(e[j] > e[j - 1])))
            return -1;
        diff[j] = 0;
    }
    diff[k] = 0;
    return k;
}

/* Per edge e[0..k), add to diff[j] the values of one sample (a list, or a tuple: drift's
 * _Sample is a tuple subclass) whose first edge above is j (below it and every later one);
 * its size to *size. Only floats of magnitude at most limit are taken (a NaN never is): 1,
 * else 0. */
static int
drift_count(PyObject *sample, const double *e, Py_ssize_t k, Py_ssize_t *diff, Py_ssize_t *size,
            double limit)
{
    PyObject **items;
    Py_ssize_t n;
    if (PyList_CheckExact(sample)) {
        items = ((PyListObject *)sample)->ob_item;
        n = PyList_GET_SIZE(sample);
    } else if (PyTuple_Check(sample)) {
        items = ((PyTupleObject *)sample)->ob_item;
        n = PyTuple_GET_SIZE(sample);
    } else
        return 0;
    for (Py_ssize_t t = 0; t < n; t++) {
        PyObject *x = items[t];
        if (!PyFloat_CheckExact(x))
            return 0;
        double v = PyFloat_AS_DOUBLE(x);
        if (!(fabs(v) <= limit))
            return 0;
        Py_ssize_t lo = 0, hi = k;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (e[mid] > v)
                hi = mid;
            else
                lo = mid + 1;
        }
        diff[lo] += 1;
    }
    *size += n;
    return 1;
}

/* cuts_below(edges, samples) -> list[int] | None: per edge, the values of all the samples
 * below it, i.e. _cuts(sorted(chain(*samples)), edges) (bisect_left over the merged sample)
 * when no value is a NaN (then every float is ordered, and bisect_left in a sorted list is
 * the count of values < edge). edges: a tuple of strictly increasing floats, no NaN; samples:
 * a tuple of lists or tuples of floats. Anything else, or a NaN anywhere: None. */
static PyObject *
cuts_below(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cuts_below takes 2 arguments");
        return NULL;
    }
    PyObject *samples = args[1];
    double e[CUTS_MAX_EDGES];
    Py_ssize_t diff[CUTS_MAX_EDGES + 1], size = 0;
    Py_ssize_t k = drift_edges(args[0], e, diff);
    if (k < 0 || !PyTuple_CheckExact(samples))
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(samples); i++)
        if (!drift_count(PyTuple_GET_ITEM(samples, i), e, k, diff, &size, INFINITY))
            Py_RETURN_NONE;
    PyObject *out = PyList_New(k);
    if (out == NULL)
        return NULL;
    Py_ssize_t below = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        below += diff[j];
        PyObject *c = PyLong_FromSsize_t(below);
        if (c == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, c);
    }
    return out;
}
/* drift_passes takes values of at most this magnitude: then every sum of up to a million of
 * them is finite, so the reference's _orderable holds. */
#define DRIFT_LIMIT 1e300

/* _ks_cannot_fire for a sample of m values with these cuts against a reference of n values
 * below = [0, R_1, ..., n] (nb of them): 1 (the KS D is at most its critical value), 0 (it may
 * not be), -1 (unusual: the reference decides). bound / (n * m) and ks_critical's (n + m) /
 * (n * m) are divisions of ints below 2**53, which Python does in doubles too. */
static int
drift_ks_cannot_fire(const long long *below, Py_ssize_t nb, const long long *cuts, Py_ssize_t k,
                     long long m, long long n, double alpha)
{
    long long bound, nm;
    if (n < 1 || m < 1 || !(alpha > 0.0 && alpha < 1.0) || __builtin_mul_overflow(n, m, &nm) ||
        nm >= (1LL << 53) || n + m >= (1LL << 53) ||
        !ks_bound_of(below, nb, cuts, k, m, n, &bound) || bound >= (1LL << 53) ||
        bound <= -(1LL << 53))
        return -1;
    double c = sqrt(-log(alpha / 2.0) / 2.0);
    double critical = c * sqrt((double)(n + m) / (double)nm);
    return (double)bound / (double)nm <= critical;
}

/* A sample's side of drifted_check: m values with these bin counts (diff, k edges) are cleared
 * when their PSI is below the threshold, or when the KS bound shows D at most its critical value
 * (_ks_cannot_fire against the reference's counts below, read from below_obj at the first need:
 * *nb < 0 until then). 1: cleared; 0: not (a drift, or a KS statistic to compute: the
 * reference's); -1: an error set. */
static int
drift_clears(PyObject *proportions, const Py_ssize_t *diff, Py_ssize_t k, Py_ssize_t m,
             double smoothing, double psi_threshold, double alpha, PyObject *below_obj,
             long long *below, Py_ssize_t *nb, long long ref_n)
{
    long long cuts[CUTS_MAX_EDGES];
    Py_ssize_t under = 0;
    for (Py_ssize_t j = 0; j < k; j++)
        cuts[j] = under += diff[j];
    PyObject *psi = NULL;
    int got = psi_value(proportions, cuts, k, m, (double)m + smoothing * (double)(k + 1),
                        smoothing, &psi);
    if (got <= 0)
        return got;
    double value = PyFloat_AS_DOUBLE(psi);
    Py_DECREF(psi);
    if (value < psi_threshold)
        return 1;
    if (*nb < 0) {
        if (below_obj == Py_None || !drift_int_array(below_obj, below, KS_BOUND_MAX))
            return 0;
        *nb = PyList_GET_SIZE(below_obj);
    }
    return drift_ks_cannot_fire(below, *nb, cuts, k, m, ref_n, alpha) == 1;
}

/* drift_passes(proportions, edges, below, n, batch, window, psi_threshold, ks_alpha,
 * batch_alone, smoothing) -> True | None: True where operators.drift_stats.drifted_check (its
 * reference) returns None (the batch passed) by its PSI and its KS bound alone, without a KS
 * statistic; None for anything else (a drift, a KS statistic to compute, an error to raise, an
 * unusual value), which the reference then decides. The same steps on the same numbers:
 * psi_value for _psi_of, the bin counts of cuts_below, ks_bound_of and ks_critical's float
 * operations for _ks_cannot_fire. below: the reference's [0, R_1, ..., n] (_ref_below), or
 * None (a reference with a NaN: no bound); window: a tuple of the passed batches' samples. */
static PyObject *
drift_passes(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "drift_passes takes 10 arguments");
        return NULL;
    }
    PyObject *proportions = args[0], *edges = args[1], *below_obj = args[2], *batch = args[4],
             *window = args[5];
    if (!PyTuple_CheckExact(proportions) || !PyTuple_CheckExact(edges) ||
        !PyLong_CheckExact(args[3]) || !PyList_CheckExact(batch) ||
        !PyTuple_CheckExact(window) || !PyFloat_CheckExact(args[6]) ||
        !PyFloat_CheckExact(args[7]) || !PyBool_Check(args[8]) || !PyFloat_CheckExact(args[9]))
        Py_RETURN_NONE;
    double psi_threshold = PyFloat_AS_DOUBLE(args[6]), alpha = PyFloat_AS_DOUBLE(args[7]),
           smoothing = PyFloat_AS_DOUBLE(args[9]);
    int alone = args[8] == Py_True;
    Py_ssize_t windows = PyTuple_GET_SIZE(window);
    if (!alone && windows == 0)
        Py_RETURN_NONE; /* the reference raises */
    long long ref_n, below[KS_BOUND_MAX];
    double e[CUTS_MAX_EDGES];
    Py_ssize_t diff[CUTS_MAX_EDGES + 1], m = 0, nb = -1;
    Py_ssize_t k = drift_edges(edges, e, diff);
    if (!exact_int64(args[3], &ref_n) || k < 0 || k + 1 != PyTuple_GET_SIZE(proportions) ||
        !drift_count(batch, e, k, diff, &m, DRIFT_LIMIT) || m == 0)
        Py_RETURN_NONE;
    int cleared;
    if (alone) { /* the batch's own test (its _ks_fires: only its bound can clear it here) */
        cleared = drift_clears(proportions, diff, k, m, smoothing, psi_threshold, alpha,
                               below_obj, below, &nb, ref_n);
        if (cleared != 1 || windows == 0) /* (no window: the window is this batch alone) */
            return cleared < 0 ? NULL : Py_NewRef(cleared ? Py_True : Py_None);
    }
    for (Py_ssize_t i = 0; i < windows; i++)
        if (!drift_count(PyTuple_GET_ITEM(window, i), e, k, diff, &m, DRIFT_LIMIT) ||
            m > 1000000)
            Py_RETURN_NONE;
    cleared = drift_clears(proportions, diff, k, m, smoothing, psi_threshold, alpha, below_obj,
                           below, &nb, ref_n); /* the pooled window's */
    return cleared < 0 ? NULL : Py_NewRef(cleared ? Py_True : Py_None);
}
/* with_horizon(item, horizon, cls, slots) -> cls: drift's release, the last passed record's
 * copy carrying the tenant's event time (operators.drift._with_horizon_python, the
 * Decoded(...) call). cls: the exact type of item; slots: its fields' descriptors in
 * constructor order (core.records.slot_descriptors), the last one the horizon's. Each field
 * is read through its descriptor and set on object.__new__(cls) through it, as
 * _slot_init's __init__ sets them. */
enum { HORIZON_MAX_SLOTS = 16 };
static PyObject *
with_horizon(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "with_horizon takes 4 arguments");
        return NULL;
    }
    PyObject *item = args[0], *horizon = args[1], *slots = args[3];
    if (!PyType_Check(args[2]) || Py_TYPE(item) != (PyTypeObject *)args[2] ||
        !PyTuple_CheckExact(slots) || PyTuple_GET_SIZE(slots) < 1 ||
        PyTuple_GET_SIZE(slots) > HORIZON_MAX_SLOTS) {
        PyErr_SetString(PyExc_TypeError, "with_horizon: an instance of cls and its slots");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[2];
    Py_ssize_t n = PyTuple_GET_SIZE(slots);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTypeObject *kind = Py_TYPE(PyTuple_GET_ITEM(slots, i));
        if (kind->tp_descr_get == NULL || kind->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "with_horizon: slots must be data descriptors");
            return NULL;
        }
    }
    PyObject *obj = cls->tp_alloc(cls, 0);
    if (obj == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *slot = PyTuple_GET_ITEM(slots, i), *value;
        if (i == n - 1) {
            value = Py_NewRef(horizon);
        } else {
            value = Py_TYPE(slot)->tp_descr_get(slot, item, (PyObject *)cls);
            if (value == NULL) {
                Py_DECREF(obj);
                return NULL;
            }
        }
        int err = Py_TYPE(slot)->tp_descr_set(slot, obj, value);
        Py_DECREF(value);
        if (err < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    untracked(obj); /* a record's copy: as build's records */
    return obj;
}
/* ============================== end of drift ============================== */

/* === validate: the step's clean path (operators/validate.py validate_batch) ================ */

#include <math.h>

enum { V_DECODED = 3, V_SIGNAL = 8, V_LIMITS = 7 };

/* Whether str s (exact and ready: else 0) is within limit UTF-8 bytes by a bound, without
 * encoding: at most limit / 4 code points, or ASCII and at most limit (core.signal_rules
 * _over gives False for both). */
static int
v_within(PyObject *s, Py_ssize_t limit)
{
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_READY(s))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    return n <= limit / 4 || (PyUnicode_IS_ASCII(s) && n <= limit);
}

/* Whether a str (checked by v_within) is not blank: s.strip() strips Py_UNICODE_ISSPACE. */
static int
v_not_blank(PyObject *s)
{
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0, n = PyUnicode_GET_LENGTH(s); i < n; i++) {
        if (!Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i)))
            return 1;
    }
    return 0;
}

/* Whether a str (checked by v_within) holds no NUL. */
static int
v_no_nul(PyObject *s)
{
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (kind == PyUnicode_1BYTE_KIND)
        return memchr(data, 0, (size_t)n) == NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyUnicode_READ(kind, data, i) == 0)
            return 0;
    }
    return 1;
}

typedef struct {
    Py_ssize_t d[V_DECODED]; /* Decoded: signal, kafka_timestamp_ms, trace */
    Py_ssize_t s[V_SIGNAL];  /* Signal: tenant_id, signal_id, type, value, weight, source, ts,
                                selectors */
    PyTypeObject *decoded, *signal;
    long long limits[V_LIMITS]; /* max id, type, source bytes; max selectors, selector bytes;
                                   future skew, age (µs) */
    PyObject *utc;
} VRules;

/* 1 when the reference's rules (core.signal_rules.check, in its order: sizes, blanks, value,
 * weight, source, time zone, NULs, then the event time) surely pass item (a record of the exact
 * classes, every slot set, the exact types the rules are written for), else 0 (item is left to
 * the reference). Its tenant and source in *tenant, *source (borrowed). Raises nothing. */
static int
v_fields_pass(const VRules *r, PyObject *item, PyObject **tenant, PyObject **source)
{
    if (!Py_IS_TYPE(item, r->decoded))
        return 0;
    PyObject *signal = SLOT(item, r->d[0]), *stamp = SLOT(item, r->d[1]),
             *trace = SLOT(item, r->d[2]);
    if (signal == NULL || stamp == NULL || trace != Py_None || !Py_IS_TYPE(signal, r->signal))
        return 0;
    PyObject *f[V_SIGNAL];
    for (int i = 0; i < V_SIGNAL; i++) {
        if ((f[i] = SLOT(signal, r->s[i])) == NULL)
            return 0;
    }
    PyObject *tenant_id = f[0], *signal_id = f[1], *type = f[2], *value = f[3], *weight = f[4],
             *src = f[5], *ts = f[6], *selectors = f[7];
    /* sizes */
    if (!v_within(tenant_id, r->limits[0]) || !v_within(signal_id, r->limits[0]) ||
        !v_within(type, r->limits[1]) || !v_within(src, r->limits[2]) ||
        !PyTuple_CheckExact(selectors) || PyTuple_GET_SIZE(selectors) > r->limits[3])
        return 0;
    Py_ssize_t n_selectors = PyTuple_GET_SIZE(selectors);
    for (Py_ssize_t i = 0; i < n_selectors; i++) {
        if (!v_within(PyTuple_GET_ITEM(selectors, i), r->limits[4]))
            return 0;
    }
    /* blanks, numbers, source, time zone */
    if (!v_not_blank(tenant_id) || !v_not_blank(signal_id) || !v_not_blank(type))
        return 0;
    if (!PyFloat_CheckExact(value))
        return 0;
    double v = PyFloat_AS_DOUBLE(value);
    if (!(v >= 0.0 && v <= 1.0)) /* NaN and the infinities fail too */
        return 0;
    if (weight != Py_None) {
        if (!PyFloat_CheckExact(weight))
            return 0;
        double w = PyFloat_AS_DOUBLE(weight);
        if (!isfinite(w) || !(w >= 0.0))
            return 0;
    }
    if (!v_not_blank(src))
        return 0;
    if (!PyDateTime_CheckExact(ts) || !_PyDateTime_HAS_TZINFO(ts) ||
        PyDateTime_DATE_GET_TZINFO(ts) != r->utc)
        return 0;
    /* NULs */
    if (!v_no_nul(tenant_id) || !v_no_nul(signal_id) || !v_no_nul(type) || !v_no_nul(src))
        return 0;
    for (Py_ssize_t i = 0; i < n_selectors; i++) {
        if (!v_no_nul(PyTuple_GET_ITEM(selectors, i)))
            return 0;
    }
    /* event time: whole microseconds, as the reference's integers */
    if (stamp != Py_None) {
        if (!PyLong_CheckExact(stamp))
            return 0;
        int overflow = 0;
        long long ms = PyLong_AsLongLongAndOverflow(stamp, &overflow);
        if (overflow || (ms == -1 && PyErr_Occurred()) || ms > 4000000000000000LL ||
            ms < -4000000000000000LL) {
            PyErr_Clear(); /* (AsLongLong of an exact int raises nothing else) */
            return 0;
        }
        long long kafka_us = ms * 1000;
        long long days = days_from_civil(PyDateTime_GET_YEAR(ts), PyDateTime_GET_MONTH(ts),
                                PyDateTime_GET_DAY(ts));
        long long ts_us = ((days * 24 + PyDateTime_DATE_GET_HOUR(ts)) * 60 +
                           PyDateTime_DATE_GET_MINUTE(ts)) * 60 + PyDateTime_DATE_GET_SECOND(ts);
        ts_us = ts_us * 1000000 + PyDateTime_DATE_GET_MICROSECOND(ts);
        if (ts_us - kafka_us > r->limits[5] || kafka_us - ts_us > r->limits[6])
            return 0;
    }
    *tenant = tenant_id;
    *source = src;
    return 1;
}

/* What the tenant rules make of tenant (core.signal_rules.check's lookup, once per tenant per
 * call, kept in cache): Py_None, any source; a set or frozenset, the sources it allows; Py_False,
 * the reference decides (unknown, inactive, or sources of another type). Borrowed; NULL with
 * tenants_get's exception. */
static PyObject *
v_tenant_rule(PyObject *cache, PyObject *tenants_get, PyObject *tenant)
{
    PyObject *rule = PyDict_GetItemWithError(cache, tenant);
    if (rule != NULL || PyErr_Occurred())
        return rule;
    PyObject *entry = PyObject_CallOneArg(tenants_get, tenant), *active = NULL,
             *sources = NULL;
    if (entry == NULL)
        return NULL;
    rule = Py_False;
    if (entry != Py_None) {
        int on;
        if ((active = PyObject_GetAttrString(entry, "active")) == NULL ||
            (on = PyObject_IsTrue(active)) < 0 ||
            (on && (sources = PyObject_GetAttrString(entry, "sources")) == NULL)) {
            rule = NULL;
        } else if (on && sources == Py_None) {
            rule = Py_None;
        } else if (on && (PyFrozenSet_CheckExact(sources) || PySet_CheckExact(sources))) {
            rule = sources;
        }
    }
    if (rule != NULL && PyDict_SetItem(cache, tenant, rule) < 0)
        rule = NULL;
    Py_DECREF(entry);
    Py_XDECREF(active);
    Py_XDECREF(sources); /* (the cache holds what it keeps) */
    return rule;
}

/* validate_run(items, decoded_slots, signal_slots, limits, utc, tenants_get, gates, slow,
 *              refused) -> list
 *
 * operators.validate.validate_batch's step, record by record in order: a record that
 * v_fields_pass and the tenant rules surely pass is asked each gate in order (gate(item): None,
 * or a hold's verdict, when refused(item, verdict) is its result and no later gate is asked),
 * and is itself when none holds it; any other record is slow(item), the reference (check, the
 * holds, the reject metric, tracing). The rules are read straight from the slots of Decoded and
 * Signal (decoded_slots: signal, kafka_timestamp_ms, trace; signal_slots: tenant_id, signal_id,
 * type, value, weight, source, ts, selectors); limits: max_id_bytes, max_type_bytes,
 * max_source_bytes, max_selectors, max_selector_bytes, and the future skew and age bounds in
 * µs; utc: datetime.UTC. */
static PyObject *
validate_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "validate_run takes 9 arguments");
        return NULL;
    }
    PyObject *items = args[0], *dslots = args[1], *sslots = args[2], *limits = args[3],
             *tenants_get = args[5], *gates = args[6], *slow = args[7], *refused = args[8];
    VRules r;
    r.utc = args[4];
    if (!PyList_Check(items) || !PyTuple_Check(dslots) || PyTuple_GET_SIZE(dslots) != V_DECODED ||
        !PyTuple_Check(sslots) || PyTuple_GET_SIZE(sslots) != V_SIGNAL ||
        !PyTuple_Check(limits) || PyTuple_GET_SIZE(limits) != V_LIMITS ||
        !PyTuple_Check(gates)) {
        PyErr_SetString(PyExc_TypeError,
                        "validate_run: a list, 3 and 8 slot descriptors, 7 limits, gates tuple");
        return NULL;
    }
    for (int i = 0; i < V_DECODED; i++) {
        PyTypeObject *owner;
        if ((r.d[i] = slot_offset(PyTuple_GET_ITEM(dslots, i), &owner)) < 0)
            return NULL;
        if (i > 0 && owner != r.decoded) {
            PyErr_SetString(PyExc_TypeError, "validate_run: slots of two classes");
            return NULL;
        }
        r.decoded = owner;
    }
    for (int i = 0; i < V_SIGNAL; i++) {
        PyTypeObject *owner;
        if ((r.s[i] = slot_offset(PyTuple_GET_ITEM(sslots, i), &owner)) < 0)
            return NULL;
        if (i > 0 && owner != r.signal) {
            PyErr_SetString(PyExc_TypeError, "validate_run: slots of two classes");
            return NULL;
        }
        r.signal = owner;
    }
    for (int i = 0; i < V_LIMITS; i++) {
        r.limits[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(limits, i));
        if (r.limits[i] == -1 && PyErr_Occurred())
            return NULL;
        if (r.limits[i] > (1LL << 62) || r.limits[i] < -(1LL << 62)) {
            PyErr_SetString(PyExc_ValueError, "validate_run: limits within +-2**62");
            return NULL;
        }
    }
    Py_ssize_t n_gates = PyTuple_GET_SIZE(gates);
    PyObject *out = PyList_New(0), *cache = PyDict_New();
    if (out == NULL || cache == NULL)
        goto fail;
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(items); n++) {
        PyObject *item = PyList_GET_ITEM(items, n), *tenant, *source, *rule, *result = NULL;
        Py_INCREF(item); /* the list may change under a callback */
        if (!v_fields_pass(&r, item, &tenant, &source)) {
            result = PyObject_CallOneArg(slow, item);
            goto item_done;
        }
        Py_INCREF(tenant); /* (item holds its signal, which holds both, but a callback...) */
        Py_INCREF(source);
        rule = v_tenant_rule(cache, tenants_get, tenant);
        int allowed = rule == NULL ? -1
                      : rule == Py_None ? 1
                      : rule == Py_False ? 0
                                         : PySet_Contains(rule, source);
        Py_DECREF(tenant);
        Py_DECREF(source);
        if (allowed < 0)
            goto item_done;
        if (!allowed) {
            result = PyObject_CallOneArg(slow, item);
            goto item_done;
        }
        for (Py_ssize_t g = 0; g < n_gates; g++) {
            PyObject *verdict = PyObject_CallOneArg(PyTuple_GET_ITEM(gates, g), item);
            if (verdict == NULL)
                goto item_done;
            if (verdict != Py_None) {
                result = PyObject_CallFunctionObjArgs(refused, item, verdict, NULL);
                Py_DECREF(verdict);
                goto item_done;
            }
            Py_DECREF(verdict);
        }
        Py_INCREF(item);
        result = item;
    item_done:
        Py_DECREF(item);
        if (result == NULL)
            goto fail;
        int err = PyList_Append(out, result);
        Py_DECREF(result);
        if (err < 0)
            goto fail;
    }
    Py_DECREF(cache);
    return out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(cache);
    return NULL;
}

/* === end of validate ====================================================================== */

/* === score: score_run, TickScore.add's clean path (operators/score.py) ====================== */

#include <float.h>

/* score_run(state, items, classes, slots, extras) -> tuple or None
 *
 * operators.score.TickScore.add_python's loop (TenantScore.fold inline, the ticks, the horizons)
 * in C, the same steps in the same order on the same objects: the window's exact sums stay
 * Python ints (PyNumber arithmetic: every value is the Python loop's), the heap is the state's
 * own list (heapq's steps: dedupe_push / dedupe_pop above), W in integer microseconds from a
 * datetime.UTC time's fields. A change noted in the call is published as _score_change builds
 * it (sc_publish: the status by TenantScore._status's products, the two divisions, the 2 places
 * from the double unless within 1e-9 of a tie, then _round_ratio, the ScoreChange's slots set
 * through their descriptors); the change a snapshot held pending is build_held(pending, None)
 * (_build).
 *
 * It only ever accepts: first, changing nothing, it checks the state and the batch, and gives
 * None (the Python loop then runs, and names any reason) unless: state and its _score of
 * exactly the classes given, every slot set, the ints ints (times within 2**61, ev and ew within
 * 2**20), the sums, last's num and den and the thresholds' ratios exact ints, the heap an exact
 * list, no trace pending, a pending change None or a tuple (then W set); every item exactly
 * Tagged / Decoded / Signal, untraced, ts a datetime of tzinfo datetime.UTC, value a finite
 * float, weight None or a finite float >= 0, horizon (when horizons close ticks) None or a
 * datetime.UTC one.
 *
 * It does not write the state: it gives back what the Python loop holds in its locals at its
 * end, (out, error, newest, newest_ts, count, seq, last_num, last_den, ev, ew, sum_v, sum_w,
 * sum_vw, pending, noted, pending_at, open_from), pending None, the held tuple or noted_mark,
 * and TickScore._store writes the state from them as the loop's finally does; error: the
 * exception an operation raised part-way (else None), which the caller raises after storing.
 * classes: (TickScore, TenantScore, Tagged, Decoded, Signal, ScoreChange); slots: the member
 * descriptors named below, then Tagged's decoded and provenance_id, Decoded's signal, trace,
 * provenance and horizon, Signal's ts, value, weight and tenant_id, then ScoreChange's fields
 * in order; extras: (build_held, noted_mark, the 3 status strs, the 101 two-place Decimals,
 * round_ratio). */

enum {
    SC_TICK = 7,
    SC_SCORE = 14,
    SC_ITEM = 10,
    SC_CHANGE = 11,
    SC_SLOTS = SC_TICK + SC_SCORE + SC_ITEM + SC_CHANGE
};
/* TickScore: _by_horizon, _open_from, _pending, _pending_at, _pending_trace, _score, _tick;
 * TenantScore: _window, _heap, _newest, _newest_ts, _count, _seq, _last, _ev, _ew, _sum_v,
 * _sum_w, _sum_vw, _healthy, _warn. */
#define SC_BOUND ((long long)1 << 61)
#define SC_EXPONENT ((long long)1 << 20)

/* An exact int within (-bound, bound): 1 and *out; 0 for anything else (no exception set). */
static int
sc_int(PyObject *value, long long bound, long long *out)
{
    return exact_int64(value, out) && *out > -bound && *out < bound;
}

/* a // b, b > 0 (Python's floor division) */
static long long
sc_floordiv(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* float.as_integer_ratio of a finite double as (n, e): x == n / 2**e, n odd when e > 0 (what
 * CPython's float_as_integer_ratio gives, its denominator 2**e): a new int n, or NULL. */
static PyObject *
sc_dyadic(double x, long *e)
{
    int exponent;
    double m = frexp(x, &exponent);
    long long n = (long long)ldexp(m, 53); /* exact: |m| in [0.5, 1) */
    long long shift = exponent - 53;
    *e = 0;
    if (n == 0)
        return PyLong_FromLong(0);
    while ((n & 1) == 0) {
        n >>= 1;
        shift++;
    }
    if (shift < 0) {
        *e = (long)-shift;
        return PyLong_FromLongLong(n);
    }
    PyObject *base = PyLong_FromLongLong(n);
    if (base == NULL || shift == 0)
        return base;
    PyObject *by = PyLong_FromLongLong(shift);
    PyObject *out = by ? PyNumber_Lshift(base, by) : NULL;
    Py_DECREF(base);
    Py_XDECREF(by);
    return out;
}

/* x << s, s >= 0: a new reference, or NULL */
static PyObject *
sc_shift(PyObject *x, long s)
{
    if (s == 0)
        return Py_NewRef(x);
    PyObject *by = PyLong_FromLong(s);
    if (by == NULL)
        return NULL;
    PyObject *out = PyNumber_Lshift(x, by);
    Py_DECREF(by);
    return out;
}

/* A heap entry's exponent (an int within SC_EXPONENT, >= 0): 0, or -1 with an exception. */
static int
sc_exponent(PyObject *value, long *out)
{
    long long e;
    if (!sc_int(value, SC_EXPONENT, &e) || e < 0) {
        PyErr_SetString(PyExc_ValueError, "score_run: a heap entry's exponent is not small");
        return -1;
    }
    *out = (long)e;
    return 0;
}

/* --- the exact sums as machine integers while they are small ----------------------------------
 *
 * Each of the loop's exact integers (the window's three sums, a score's numerator and
 * denominator, the last change's) is an sc_hint: a 128-bit machine integer while its magnitude
 * is below 2**126, else a Python int. Every operation gives the exact integer the PyNumber
 * operation gives (the Python loop's); only where an operand or the result is not small does it
 * make Python ints (a result that is small again is a machine integer again). The workload's
 * sums are ~2**118 at
 * most (a value's dyadic numerator has 53 bits, its exponent ~55), so the allocation of each
 * intermediate int (most of the loop's cost under perf: _PyObject_Malloc, tuple and int frees)
 * is gone from the common path; the state keeps Python ints (made at the call's end), so
 * snapshots and the reference are unchanged. */

#ifndef __SIZEOF_INT128__
#error "core/_native.c needs a compiler with __int128 (GCC or Clang on a 64-bit target)"
#endif
typedef __int128 sc_i128;
typedef unsigned __int128 sc_u128;

typedef struct {
    PyObject *o; /* NULL: the value is v; else the value (an owned exact int) */
    sc_i128 v;
} sc_hint;

#define SC_HINT_BITS 126

/* |v| < 2**bits, bits in [0, 126] */
static int
sc_small(sc_i128 v, int bits)
{
    sc_i128 limit = (sc_i128)1 << bits;
    return v > -limit && v < limit;
}

/* h's value as a new Python int, or NULL */
static PyObject *
sc_hint_obj(const sc_hint *h)
{
    if (h->o != NULL)
        return Py_NewRef(h->o);
    if (sc_small(h->v, 63))
        return PyLong_FromLongLong((long long)h->v);
    unsigned char bytes[sizeof(sc_i128)];
    memcpy(bytes, &h->v, sizeof bytes); /* two's complement, the machine's byte order */
    return _PyLong_FromByteArray(bytes, sizeof bytes, PY_LITTLE_ENDIAN, 1);
}

/* h = x (an exact int): 0, or -1 with an exception */
static int
sc_hint_set(sc_hint *h, PyObject *x)
{
    Py_CLEAR(h->o);
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (!overflow) {
        if (small == -1 && PyErr_Occurred())
            return -1;
        h->v = small;
        return 0;
    }
    size_t bits = _PyLong_NumBits(x); /* of |x| */
    if (bits != (size_t)-1 && bits <= SC_HINT_BITS) {
        unsigned char bytes[sizeof(sc_i128)];
#if PY_VERSION_HEX >= 0x030D0000
        int err =
            _PyLong_AsByteArray((PyLongObject *)x, bytes, sizeof bytes, PY_LITTLE_ENDIAN, 1, 1);
#else
        int err = _PyLong_AsByteArray((PyLongObject *)x, bytes, sizeof bytes, PY_LITTLE_ENDIAN, 1);
#endif
        if (err == 0) {
            memcpy(&h->v, bytes, sizeof bytes);
            return 0;
        }
    }
    PyErr_Clear();
    h->o = Py_NewRef(x);
    return 0;
}

/* h takes x's value, a machine integer */
static void
sc_hint_small(sc_hint *h, sc_i128 x)
{
    Py_CLEAR(h->o);
    h->v = x;
}

/* h = the machine integer r, |r| < 2**127: small, or made a Python int. 0, or -1. */
static int
sc_hint_result(sc_hint *h, sc_i128 r)
{
    Py_CLEAR(h->o);
    h->v = r;
    if (sc_small(r, SC_HINT_BITS))
        return 0;
    PyObject *o = sc_hint_obj(h);
    if (o == NULL)
        return -1;
    h->o = o;
    return 0;
}

/* h = h << s, s >= 0: 0, or -1 */
static int
sc_hint_shift(sc_hint *h, long s)
{
    if (s == 0)
        return 0;
    if (h->o == NULL && s < SC_HINT_BITS && sc_small(h->v, SC_HINT_BITS - (int)s)) {
        h->v *= (sc_i128)1 << s; /* (a multiplication: a negative's shift is undefined in C) */
        return 0;
    }
    PyObject *x = sc_hint_obj(h);
    PyObject *out = x ? sc_shift(x, s) : NULL;
    Py_XDECREF(x);
    if (out == NULL)
        return -1;
    Py_XSETREF(h->o, out);
    return 0;
}

/* *out = a (+ or -) b, a new hint (out may be a): 0, or -1 */
static int
sc_hint_add(sc_hint *out, const sc_hint *a, const sc_hint *b, int add)
{
    if (a->o == NULL && b->o == NULL) /* |a|, |b| < 2**126: no overflow */
        return sc_hint_result(out, add ? a->v + b->v : a->v - b->v);
    PyObject *x = sc_hint_obj(a), *y = x ? sc_hint_obj(b) : NULL;
    PyObject *r = y ? (add ? PyNumber_Add(x, y) : PyNumber_Subtract(x, y)) : NULL;
    Py_XDECREF(x);
    Py_XDECREF(y);
    if (r == NULL)
        return -1;
    int err = sc_hint_set(out, r);
    Py_DECREF(r);
    return err;
}

/* *out = a * b (out may be a or b): 0, or -1 */
static int
sc_hint_mul(sc_hint *out, const sc_hint *a, const sc_hint *b)
{
    sc_i128 r;
    if (a->o == NULL && b->o == NULL && !__builtin_mul_overflow(a->v, b->v, &r))
        return sc_hint_result(out, r);
    PyObject *x = sc_hint_obj(a), *y = x ? sc_hint_obj(b) : NULL;
    PyObject *p = y ? PyNumber_Multiply(x, y) : NULL;
    Py_XDECREF(x);
    Py_XDECREF(y);
    if (p == NULL)
        return -1;
    int err = sc_hint_set(out, p);
    Py_DECREF(p);
    return err;
}

/* |a| * |b| as 256 bits (hi, lo) */
static void
sc_mul_wide(sc_u128 a, sc_u128 b, sc_u128 *hi, sc_u128 *lo)
{
    uint64_t a0 = (uint64_t)a, a1 = (uint64_t)(a >> 64), b0 = (uint64_t)b, b1 = (uint64_t)(b >> 64);
    sc_u128 p00 = (sc_u128)a0 * b0, p01 = (sc_u128)a0 * b1, p10 = (sc_u128)a1 * b0,
            p11 = (sc_u128)a1 * b1;
    sc_u128 mid = (p00 >> 64) + (uint64_t)p01 + (uint64_t)p10; /* < 3 * 2**64 */
    *lo = (mid << 64) | (uint64_t)p00;
    *hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
}

static int
sc_sign(sc_i128 v)
{
    return (v > 0) - (v < 0);
}

/* a * b compared with c * d (op: Py_NE or Py_GE), as PyObject_RichCompareBool of the
 * products: 1, 0, or -1 */
static int
sc_hint_products(const sc_hint *a, const sc_hint *b, const sc_hint *c, const sc_hint *d, int op)
{
    if (a->o == NULL && b->o == NULL && c->o == NULL && d->o == NULL) {
        int s1 = sc_sign(a->v) * sc_sign(b->v), s2 = sc_sign(c->v) * sc_sign(d->v), cmp;
        if (s1 != s2 || s1 == 0) {
            cmp = s1 > s2 ? 1 : s1 < s2 ? -1 : 0;
        } else {
            sc_u128 h1, l1, h2, l2;
            sc_mul_wide(a->v < 0 ? -(sc_u128)a->v : (sc_u128)a->v,
                        b->v < 0 ? -(sc_u128)b->v : (sc_u128)b->v, &h1, &l1);
            sc_mul_wide(c->v < 0 ? -(sc_u128)c->v : (sc_u128)c->v,
                        d->v < 0 ? -(sc_u128)d->v : (sc_u128)d->v, &h2, &l2);
            cmp = h1 != h2 ? (h1 > h2 ? 1 : -1) : l1 != l2 ? (l1 > l2 ? 1 : -1) : 0;
            if (s1 < 0)
                cmp = -cmp;
        }
        return op == Py_NE ? cmp != 0 : cmp >= 0;
    }
    PyObject *x = sc_hint_obj(a), *y = x ? sc_hint_obj(b) : NULL;
    PyObject *z = y ? sc_hint_obj(c) : NULL, *w = z ? sc_hint_obj(d) : NULL;
    PyObject *left = w ? PyNumber_Multiply(x, y) : NULL;
    PyObject *right = left ? PyNumber_Multiply(z, w) : NULL;
    int out = right ? PyObject_RichCompareBool(left, right, op) : -1;
    Py_XDECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(z);
    Py_XDECREF(w);
    Py_XDECREF(left);
    Py_XDECREF(right);
    return out;
}

/* dst = src (dst's old value released) */
static void
sc_hint_copy(sc_hint *dst, const sc_hint *src)
{
    Py_XSETREF(dst->o, Py_XNewRef(src->o));
    dst->v = src->v;
}

/* sum_v, sum_w, sum_vw += or -= an entry's terms (fold's and _evict's three lines): 0, or -1 */
static int
sc_terms(sc_hint *sum_v, sc_hint *sum_w, sc_hint *sum_vw, const sc_hint *vn, long ve,
         const sc_hint *wn, long we, long ev, long ew, int add)
{
    sc_hint term = {NULL, 0};
    int err = -1;
    sc_hint_copy(&term, vn);
    if (sc_hint_shift(&term, ev - ve) < 0 || sc_hint_add(sum_v, sum_v, &term, add) < 0)
        goto done;
    sc_hint_copy(&term, wn);
    if (sc_hint_shift(&term, ew - we) < 0 || sc_hint_add(sum_w, sum_w, &term, add) < 0)
        goto done;
    if (sc_hint_mul(&term, vn, wn) < 0 || sc_hint_shift(&term, ev + ew - ve - we) < 0 ||
        sc_hint_add(sum_vw, sum_vw, &term, add) < 0)
        goto done;
    err = 0;
done:
    Py_XDECREF(term.o);
    return err;
}

/* (tenant_id, provenance, provenance_id, at, count, sum_w, ew): the change item made, noted
 * (TickScore.add's noted) */
static PyObject *
sc_noted(PyObject *item, const Py_ssize_t *o, PyObject *at, Py_ssize_t count, PyObject *sum_w,
         long ew)
{
    /* o: Tagged decoded, provenance_id; Decoded signal, trace, provenance, horizon; Signal ts,
     * value, weight, tenant_id */
    PyObject *decoded = SLOT(item, o[0]), *pid = SLOT(item, o[1]);
    PyObject *signal = decoded ? SLOT(decoded, o[2]) : NULL;
    PyObject *provenance = decoded ? SLOT(decoded, o[4]) : NULL;
    PyObject *tenant = signal ? SLOT(signal, o[9]) : NULL;
    if (pid == NULL || provenance == NULL || tenant == NULL) {
        PyErr_SetString(PyExc_AttributeError, "score_run: a record lost its fields");
        return NULL;
    }
    return Py_BuildValue("(OOOOnOl)", tenant, provenance, pid, at, count, sum_w, ew);
}

/* What a published change is built with (operators.score._score_change's constants). */
typedef struct {
    sc_hint hn, hd, wn, wd;       /* the thresholds' exact ratios (the state's) */
    PyObject *statuses;           /* _STATUS_VALUE's strs: HEALTHY, WARN, CRITICAL */
    PyObject *two_places;         /* _TWO_PLACES: 0.00 .. 1.00 */
    PyObject *round_ratio;        /* _round_ratio */
    PyTypeObject *change;         /* ScoreChange */
    PyObject *setters[11];        /* its slots, in field order */
} sc_publisher;

/* sum_w / (1 << ew), correctly rounded, saturated at the largest double (_score_change's
 * window_weight): sum_w (>= 0) rounded to a double (PyLong_AsDouble, and the conversion of a
 * 128-bit integer, round half-even) and scaled by 2**-ew where that is exact (a normal
 * result, or 0), else the int division. */
static PyObject *
sc_weight(const sc_hint *sum_w, long ew)
{
    PyObject *sum = NULL;
    double x;
    if (sum_w->o == NULL) {
        x = (double)sum_w->v;
    } else {
        x = PyLong_AsDouble(sum_w->o);
        if (x == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return NULL;
            PyErr_Clear();
            goto divide;
        }
    }
    double r = ldexp(x, (int)-ew);
    if (x == 0.0 || r >= DBL_MIN)
        return PyFloat_FromDouble(r);
divide:
    if ((sum = sc_hint_obj(sum_w)) == NULL)
        return NULL;
    PyObject *one = PyLong_FromLong(1);
    PyObject *d = one ? sc_shift(one, ew) : NULL;
    PyObject *out = d ? PyNumber_TrueDivide(sum, d) : NULL;
    Py_XDECREF(one);
    Py_XDECREF(d);
    Py_DECREF(sum);
    if (out == NULL && PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyErr_Clear();
        out = PyFloat_FromDouble(DBL_MAX);
    }
    return out;
}

/* _score_change(noted, num, den, status, seq, None) of the change item made: the same
 * ScoreChange, its status from TenantScore._status, built as slot_maker builds it (the slots
 * set through their descriptors). */
static PyObject *
sc_publish(const sc_publisher *p, PyObject *item, const Py_ssize_t *o, PyObject *at,
           Py_ssize_t count, const sc_hint *sum_w, long ew, const sc_hint *num,
           const sc_hint *den, long long seq)
{
    PyObject *decoded = SLOT(item, o[0]), *pid = SLOT(item, o[1]);
    PyObject *signal = decoded ? SLOT(decoded, o[2]) : NULL;
    PyObject *provenance = decoded ? SLOT(decoded, o[4]) : NULL;
    PyObject *tenant = signal ? SLOT(signal, o[9]) : NULL;
    if (pid == NULL || provenance == NULL || tenant == NULL) {
        PyErr_SetString(PyExc_AttributeError, "score_run: a record lost its fields");
        return NULL;
    }
    /* TenantScore._status: num * hd >= hn * den, then num * wd >= wn * den */
    int healthy = sc_hint_products(num, &p->hd, &p->hn, den, Py_GE), warn = 0;
    if (healthy < 0 || (!healthy && (warn = sc_hint_products(num, &p->wd, &p->wn, den, Py_GE)) < 0))
        return NULL;
    PyObject *status = PyTuple_GET_ITEM(p->statuses, healthy ? 0 : warn ? 1 : 2);
    PyObject *weight = NULL, *value = NULL, *places = NULL, *n = NULL, *number = NULL;
    PyObject *num_o = NULL, *den_o = NULL, *out = NULL;
    if ((weight = sc_weight(sum_w, ew)) == NULL || (num_o = sc_hint_obj(num)) == NULL ||
        (den_o = sc_hint_obj(den)) == NULL || (value = PyNumber_TrueDivide(num_o, den_o)) == NULL)
        goto done;
    /* the 2 places from the double unless within 1e-9 of a tie (_score_change) */
    double hundred = PyFloat_AS_DOUBLE(value) * 100.0;
    if (0.0 <= hundred && hundred <= 100.0) {
        long q = (long)hundred;
        double half = hundred - (double)q - 0.5;
        if (half > 1e-9)
            places = Py_NewRef(PyTuple_GET_ITEM(p->two_places, q + 1));
        else if (half < -1e-9)
            places = Py_NewRef(PyTuple_GET_ITEM(p->two_places, q));
    }
    if (places == NULL) {
        PyObject *two = PyLong_FromLong(2);
        places = two ? PyObject_CallFunctionObjArgs(p->round_ratio, num_o, den_o, two, NULL) : NULL;
        Py_XDECREF(two);
        if (places == NULL)
            goto done;
    }
    if ((n = PyLong_FromSsize_t(count)) == NULL || (number = PyLong_FromLongLong(seq)) == NULL)
        goto done;
    PyObject *values[11] = {tenant, value,      status, at,     n,      weight,
                            pid,    provenance, places, number, Py_None};
    out = build(p->change, (PyObject **)p->setters, values, 11);
done:
    Py_XDECREF(weight);
    Py_XDECREF(value);
    Py_XDECREF(places);
    Py_XDECREF(n);
    Py_XDECREF(number);
    Py_XDECREF(num_o);
    Py_XDECREF(den_o);
    return out;
}

static PyObject *
score_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "score_run takes 5 arguments");
        return NULL;
    }
    PyObject *state = args[0], *classes = args[2], *slots = args[3], *extras = args[4];
    if (!PyList_Check(args[1]) || !PyTuple_Check(classes) || PyTuple_GET_SIZE(classes) != 6 ||
        !PyTuple_Check(slots) || PyTuple_GET_SIZE(slots) != SC_SLOTS || !PyTuple_Check(extras) ||
        PyTuple_GET_SIZE(extras) != 5 || !PyTuple_Check(PyTuple_GET_ITEM(extras, 2)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(extras, 2)) != 3 ||
        !PyTuple_Check(PyTuple_GET_ITEM(extras, 3)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(extras, 3)) != 101) {
        PyErr_SetString(PyExc_TypeError, "score_run: a list, 6 classes, the slots, 5 extras");
        return NULL;
    }
    PyObject *build_held = PyTuple_GET_ITEM(extras, 0), *noted_mark = PyTuple_GET_ITEM(extras, 1);
    sc_publisher pub = {.hn = {NULL, 0}, .hd = {NULL, 0}, .wn = {NULL, 0}, .wd = {NULL, 0}};
    pub.statuses = PyTuple_GET_ITEM(extras, 2);
    pub.two_places = PyTuple_GET_ITEM(extras, 3);
    pub.round_ratio = PyTuple_GET_ITEM(extras, 4);
    PyObject *cls[6];
    for (int i = 0; i < 6; i++) {
        cls[i] = PyTuple_GET_ITEM(classes, i);
        if (!PyType_Check(cls[i])) {
            PyErr_SetString(PyExc_TypeError, "score_run: classes must be types");
            return NULL;
        }
    }
    pub.change = (PyTypeObject *)cls[5];
    Py_ssize_t ot[SC_TICK], os[SC_SCORE], o[SC_ITEM];
    for (int i = 0; i < SC_SLOTS; i++) {
        /* each slot's class: TickScore, TenantScore, Tagged x2, Decoded x4, Signal x4,
         * ScoreChange */
        const int item0 = SC_TICK + SC_SCORE, change0 = item0 + SC_ITEM;
        int owner = i < SC_TICK      ? 0
                    : i < item0      ? 1
                    : i < item0 + 2  ? 2
                    : i < item0 + 6  ? 3
                    : i < change0    ? 4
                                     : 5;
        PyObject *descr = PyTuple_GET_ITEM(slots, i);
        Py_ssize_t at = dedupe_slot(descr, cls[owner]);
        if (at < 0) {
            PyErr_SetString(PyExc_TypeError, "score_run: slots must be the classes' members");
            return NULL;
        }
        if (i < SC_TICK)
            ot[i] = at;
        else if (i < item0)
            os[i - SC_TICK] = at;
        else if (i < change0)
            o[i - item0] = at;
        else
            pub.setters[i - change0] = descr;
    }
    if (Py_TYPE(state) != (PyTypeObject *)cls[0])
        Py_RETURN_NONE;
    for (int i = 0; i < SC_TICK; i++) {
        if (SLOT(state, ot[i]) == NULL)
            Py_RETURN_NONE;
    }
    PyObject *score = SLOT(state, ot[5]);
    if (Py_TYPE(score) != (PyTypeObject *)cls[1])
        Py_RETURN_NONE;
    for (int i = 0; i < SC_SCORE; i++) {
        if (SLOT(score, os[i]) == NULL)
            Py_RETURN_NONE;
    }
    /* the state, as the Python loop reads it into locals */
    long long tick, window, newest = 0, pending_at, open_from = 0, seq, count_ll, ev_ll, ew_ll;
    PyObject *by = SLOT(state, ot[0]), *pending0 = SLOT(state, ot[2]);
    PyObject *open0 = SLOT(state, ot[1]), *newest0 = SLOT(score, os[2]), *last = SLOT(score, os[6]);
    if (!sc_int(SLOT(state, ot[6]), SC_BOUND, &tick) || tick < 0 || (by != Py_True && by != Py_False) ||
        SLOT(state, ot[4]) != Py_None || !sc_int(SLOT(state, ot[3]), SC_BOUND, &pending_at) ||
        !sc_int(SLOT(score, os[0]), SC_BOUND, &window) || window <= 0 ||
        !PyList_CheckExact(SLOT(score, os[1])) || !sc_int(SLOT(score, os[4]), SC_BOUND, &count_ll) ||
        count_ll < 0 || !sc_int(SLOT(score, os[5]), SC_BOUND, &seq) ||
        !sc_int(SLOT(score, os[7]), SC_EXPONENT, &ev_ll) || ev_ll < 0 ||
        !sc_int(SLOT(score, os[8]), SC_EXPONENT, &ew_ll) || ew_ll < 0 ||
        !PyLong_CheckExact(SLOT(score, os[9])) || !PyLong_CheckExact(SLOT(score, os[10])) ||
        !PyLong_CheckExact(SLOT(score, os[11])))
        Py_RETURN_NONE;
    int by_horizon = by == Py_True && tick > 0;
    int has_newest = newest0 != Py_None;
    if (has_newest && !sc_int(newest0, SC_BOUND, &newest))
        Py_RETURN_NONE;
    int has_open = by_horizon && open0 != Py_None;
    if (has_open && !sc_int(open0, SC_BOUND, &open_from))
        Py_RETURN_NONE;
    if (pending0 != Py_None && (!PyTuple_CheckExact(pending0) || !has_newest))
        Py_RETURN_NONE;
    if (last != Py_None &&
        (!PyTuple_CheckExact(last) || PyTuple_GET_SIZE(last) != 3 ||
         !PyLong_CheckExact(PyTuple_GET_ITEM(last, 0)) ||
         !PyLong_CheckExact(PyTuple_GET_ITEM(last, 1))))
        Py_RETURN_NONE;
    PyObject *thresholds[2] = {SLOT(score, os[12]), SLOT(score, os[13])};
    for (int i = 0; i < 2; i++) {
        PyObject *t = thresholds[i];
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 2 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(t, 0)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(t, 1)))
            Py_RETURN_NONE;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[1]);
    PyObject *items = PyList_AsTuple(args[1]); /* a callback cannot change what is checked */
    if (items == NULL)
        return NULL;
    long long *micros = PyMem_Malloc(sizeof(long long) * (size_t)(2 * n + 1));
    if (micros == NULL) {
        Py_DECREF(items);
        return PyErr_NoMemory();
    }
    long long *horizons = micros + n; /* -SC_BOUND: none */
    PyObject *result = NULL;
    /* the batch */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (Py_TYPE(item) != (PyTypeObject *)cls[2])
            goto unusual;
        PyObject *decoded = SLOT(item, o[0]);
        if (decoded == NULL || Py_TYPE(decoded) != (PyTypeObject *)cls[3] ||
            SLOT(decoded, o[3]) != Py_None || SLOT(item, o[1]) == NULL ||
            SLOT(decoded, o[4]) == NULL)
            goto unusual;
        PyObject *signal = SLOT(decoded, o[2]);
        if (signal == NULL || Py_TYPE(signal) != (PyTypeObject *)cls[4] ||
            SLOT(signal, o[9]) == NULL)
            goto unusual;
        if (!utc_micros(SLOT(signal, o[6]), &micros[i]) || micros[i] <= -SC_BOUND / 2 ||
            micros[i] >= SC_BOUND / 2)
            goto unusual;
        PyObject *value = SLOT(signal, o[7]), *weight = SLOT(signal, o[8]);
        if (value == NULL || !PyFloat_CheckExact(value) || !isfinite(PyFloat_AS_DOUBLE(value)))
            goto unusual;
        if (weight == NULL ||
            (weight != Py_None &&
             (!PyFloat_CheckExact(weight) || !isfinite(PyFloat_AS_DOUBLE(weight)) ||
              PyFloat_AS_DOUBLE(weight) < 0)))
            goto unusual;
        horizons[i] = -SC_BOUND;
        if (by_horizon) {
            PyObject *horizon = SLOT(decoded, o[5]);
            if (horizon == NULL)
                goto unusual;
            if (horizon != Py_None &&
                (!utc_micros(horizon, &horizons[i]) || horizons[i] <= -SC_BOUND / 2 ||
                 horizons[i] >= SC_BOUND / 2))
                goto unusual;
        }
    }

    /* the loop's locals (owned references; the exact integers as sc_hints) */
    PyObject *heap = Py_NewRef(SLOT(score, os[1]));
    PyObject *newest_ts = Py_NewRef(SLOT(score, os[3]));
    sc_hint sum_v = {NULL, 0}, sum_w = {NULL, 0}, sum_vw = {NULL, 0}, last_num = {NULL, 1},
            last_den = {NULL, 0}, num = {NULL, 0}, den = {NULL, 0}, noted_sum_w = {NULL, 0},
            vn = {NULL, 0}, wn = {NULL, 0};
    PyObject *pending = Py_NewRef(pending0); /* None, the held tuple or noted_mark */
    PyObject *noted_at = NULL, *noted_item = NULL;
    Py_ssize_t noted_count = 0;
    long noted_ew = 0;
    PyObject *vn_o = NULL, *wn_o = NULL, *entry = NULL;
    PyObject *out = PyList_New(0), *error = NULL;
    Py_ssize_t count = (Py_ssize_t)count_ll;
    long ev = (long)ev_ll, ew = (long)ew_ll;
    long long pending_tick = tick ? sc_floordiv(pending_at, tick) : 0;
    if (out == NULL || sc_hint_set(&sum_v, SLOT(score, os[9])) < 0 ||
        sc_hint_set(&sum_w, SLOT(score, os[10])) < 0 ||
        sc_hint_set(&sum_vw, SLOT(score, os[11])) < 0 ||
        (last != Py_None && (sc_hint_set(&last_num, PyTuple_GET_ITEM(last, 0)) < 0 ||
                             sc_hint_set(&last_den, PyTuple_GET_ITEM(last, 1)) < 0)) ||
        sc_hint_set(&pub.hn, PyTuple_GET_ITEM(thresholds[0], 0)) < 0 ||
        sc_hint_set(&pub.hd, PyTuple_GET_ITEM(thresholds[0], 1)) < 0 ||
        sc_hint_set(&pub.wn, PyTuple_GET_ITEM(thresholds[1], 0)) < 0 ||
        sc_hint_set(&pub.wd, PyTuple_GET_ITEM(thresholds[1], 1)) < 0)
        goto cleanup; /* (the exception set) */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        PyObject *decoded = SLOT(item, o[0]);
        PyObject *signal = decoded ? SLOT(decoded, o[2]) : NULL;
        PyObject *at = signal ? SLOT(signal, o[6]) : NULL;
        PyObject *value = signal ? SLOT(signal, o[7]) : NULL;
        PyObject *weight = signal ? SLOT(signal, o[8]) : NULL;
        if (at == NULL || value == NULL || weight == NULL) {
            PyErr_SetString(PyExc_AttributeError, "score_run: a record lost its fields");
            goto failed;
        }
        long long ts = micros[i];
        int changed = 0;
        if (!has_newest || ts > newest - window) { /* else late: it changes nothing */
            long we = 0, ve = 0;
            wn_o = weight == Py_None ? PyLong_FromLong(1)
                                     : sc_dyadic(PyFloat_AS_DOUBLE(weight), &we);
            if (wn_o == NULL || (vn_o = sc_dyadic(PyFloat_AS_DOUBLE(value), &ve)) == NULL ||
                sc_hint_set(&wn, wn_o) < 0 || sc_hint_set(&vn, vn_o) < 0)
                goto failed;
            if (ve > ev) {
                if (sc_hint_shift(&sum_v, ve - ev) < 0 || sc_hint_shift(&sum_vw, ve - ev) < 0)
                    goto failed;
                ev = ve;
            }
            if (we > ew) {
                if (sc_hint_shift(&sum_w, we - ew) < 0 || sc_hint_shift(&sum_vw, we - ew) < 0)
                    goto failed;
                ew = we;
            }
            if (sc_terms(&sum_v, &sum_w, &sum_vw, &vn, ve, &wn, we, ev, ew, 1) < 0)
                goto failed;
            count++;
            /* heappush(heap, (ts, vn, ve, wn, we)) */
            if ((entry = PyTuple_New(5)) == NULL)
                goto failed;
            PyTuple_SET_ITEM(entry, 1, vn_o);
            PyTuple_SET_ITEM(entry, 3, wn_o);
            vn_o = wn_o = NULL;
            PyObject *e0 = PyLong_FromLongLong(ts), *e2 = PyLong_FromLong(ve),
                     *e4 = PyLong_FromLong(we);
            if (e0)
                PyTuple_SET_ITEM(entry, 0, e0);
            if (e2)
                PyTuple_SET_ITEM(entry, 2, e2);
            if (e4)
                PyTuple_SET_ITEM(entry, 4, e4);
            if (e0 == NULL || e2 == NULL || e4 == NULL || dedupe_push(heap, entry) < 0)
                goto failed;
            Py_CLEAR(entry);
            if (!has_newest || ts > newest) {
                newest = ts;
                has_newest = 1;
                Py_SETREF(newest_ts, Py_NewRef(at));
                long long edge = ts - window;
                /* while heap[0][0] <= edge: TenantScore._evict, inline */
                for (;;) {
                    if (PyList_GET_SIZE(heap) == 0) {
                        PyErr_SetString(PyExc_IndexError, "list index out of range");
                        goto failed;
                    }
                    PyObject *oldest = PyList_GET_ITEM(heap, 0);
                    long long first;
                    if (PyTuple_CheckExact(oldest) && PyTuple_GET_SIZE(oldest) == 5 &&
                        sc_int(PyTuple_GET_ITEM(oldest, 0), SC_BOUND, &first)) {
                        if (first > edge)
                            break;
                    } else {
                        /* anything else: as Python compares it */
                        PyObject *bound = PyLong_FromLongLong(edge);
                        Py_INCREF(oldest);
                        PyObject *head = bound ? PySequence_GetItem(oldest, 0) : NULL;
                        Py_DECREF(oldest);
                        int below = head ? PyObject_RichCompareBool(head, bound, Py_LE) : -1;
                        Py_XDECREF(head);
                        Py_XDECREF(bound);
                        if (below < 0)
                            goto failed;
                        if (!below)
                            break;
                    }
                    entry = dedupe_pop(heap);
                    if (entry == NULL)
                        goto failed;
                    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 5 ||
                        !PyLong_Check(PyTuple_GET_ITEM(entry, 1)) ||
                        !PyLong_Check(PyTuple_GET_ITEM(entry, 3))) {
                        PyErr_SetString(PyExc_ValueError, "score_run: a heap entry is not 5 ints");
                        goto failed;
                    }
                    long pve, pwe;
                    if (sc_exponent(PyTuple_GET_ITEM(entry, 2), &pve) < 0 ||
                        sc_exponent(PyTuple_GET_ITEM(entry, 4), &pwe) < 0 ||
                        sc_hint_set(&vn, PyTuple_GET_ITEM(entry, 1)) < 0 ||
                        sc_hint_set(&wn, PyTuple_GET_ITEM(entry, 3)) < 0 ||
                        sc_terms(&sum_v, &sum_w, &sum_vw, &vn, pve, &wn, pwe, ev, ew, 0) < 0)
                        goto failed;
                    Py_CLEAR(entry);
                    count--;
                }
            }
            /* TenantScore._rational, inline */
            int weighted = sum_w.o == NULL ? sum_w.v != 0 : PyObject_IsTrue(sum_w.o);
            if (weighted < 0)
                goto failed;
            if (weighted) {
                sc_hint_copy(&num, &sum_vw);
                sc_hint_copy(&den, &sum_w);
            } else {
                sc_hint_copy(&num, &sum_v);
                sc_hint_small(&den, count);
            }
            if (sc_hint_shift(&den, ev) < 0)
                goto failed;
            /* changed = num * last_den != last_num * den */
            changed = sc_hint_products(&num, &last_den, &last_num, &den, Py_NE);
            if (changed < 0)
                goto failed;
        }
        if (pending != Py_None) {
            /* W only grows: a tick it left is closed for good. */
            if (!tick || sc_floordiv(newest, tick) > pending_tick) {
                PyObject *made;
                if (pending != noted_mark) {
                    made = PyObject_CallFunctionObjArgs(build_held, pending, Py_None, NULL);
                } else {
                    made = sc_publish(&pub, noted_item, o, noted_at, noted_count, &noted_sum_w,
                                      noted_ew, &last_num, &last_den, seq);
                }
                int err = made ? PyList_Append(out, made) : -1;
                Py_XDECREF(made);
                if (err < 0)
                    goto failed;
                Py_SETREF(pending, Py_NewRef(Py_None));
            }
        }
        if (changed) {
            sc_hint_copy(&last_num, &num);
            sc_hint_copy(&last_den, &den);
            seq++;
            noted_item = item;
            Py_XSETREF(noted_at, Py_NewRef(newest_ts));
            sc_hint_copy(&noted_sum_w, &sum_w);
            noted_count = count;
            noted_ew = ew;
            if (tick) {
                Py_SETREF(pending, Py_NewRef(noted_mark));
                pending_at = newest;
                if (has_open && open_from > pending_at)
                    pending_at = open_from; /* W's tick is closed: the first open one */
                pending_tick = sc_floordiv(pending_at, tick);
            } else {
                PyObject *made = sc_publish(&pub, item, o, noted_at, noted_count, &noted_sum_w,
                                            noted_ew, &last_num, &last_den, seq);
                int err = made ? PyList_Append(out, made) : -1;
                Py_XDECREF(made);
                if (err < 0)
                    goto failed;
            }
        }
        if (by_horizon && pending != Py_None && horizons[i] != -SC_BOUND) {
            /* the end of a drift release: the open tick closes now, unless it is after the
             * drift step's event time's */
            if (pending_tick <= sc_floordiv(horizons[i], tick)) {
                PyObject *made;
                if (pending != noted_mark) {
                    made = PyObject_CallFunctionObjArgs(build_held, pending, Py_None, NULL);
                } else {
                    made = sc_publish(&pub, noted_item, o, noted_at, noted_count, &noted_sum_w,
                                      noted_ew, &last_num, &last_den, seq);
                }
                int err = made ? PyList_Append(out, made) : -1;
                Py_XDECREF(made);
                if (err < 0)
                    goto failed;
                Py_SETREF(pending, Py_NewRef(Py_None));
                open_from = (pending_tick + 1) * tick;
                has_open = 1;
            }
        }
    }
    goto finish;
failed:
    /* an operation raised part-way: the locals as the Python loop's finally finds them */
    {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (value != NULL && traceback != NULL)
            PyException_SetTraceback(value, traceback);
        Py_XDECREF(type);
        Py_XDECREF(traceback);
        error = value;
        if (error == NULL)
            error = Py_NewRef(PyExc_SystemError);
    }
finish:
    {
        PyObject *noted = NULL, *newest_obj = NULL, *open_obj = NULL, *sums[5] = {NULL};
        const sc_hint *hints[5] = {&last_num, &last_den, &sum_v, &sum_w, &sum_vw};
        int made = 1;
        for (int k = 0; k < 5 && made; k++)
            made = (sums[k] = sc_hint_obj(hints[k])) != NULL;
        if (made && pending == noted_mark) {
            PyObject *noted_w = sc_hint_obj(&noted_sum_w);
            noted = noted_w ? sc_noted(noted_item, o, noted_at, noted_count, noted_w, noted_ew)
                            : NULL;
            Py_XDECREF(noted_w);
        } else if (made) {
            noted = Py_NewRef(Py_None);
        }
        if (noted != NULL) {
            newest_obj = has_newest ? PyLong_FromLongLong(newest) : Py_NewRef(Py_None);
            open_obj = has_open ? PyLong_FromLongLong(open_from) : Py_NewRef(Py_None);
        }
        if (noted != NULL && newest_obj != NULL && open_obj != NULL)
            result = Py_BuildValue("(OOOOnLOOllOOOOOLO)", out, error ? error : Py_None,
                                   newest_obj, newest_ts, count, seq, sums[0], sums[1], ev, ew,
                                   sums[2], sums[3], sums[4], pending, noted, pending_at,
                                   open_obj);
        Py_XDECREF(noted);
        Py_XDECREF(newest_obj);
        Py_XDECREF(open_obj);
        for (int k = 0; k < 5; k++)
            Py_XDECREF(sums[k]);
    }
cleanup:
    Py_XDECREF(error);
    Py_XDECREF(out);
    Py_XDECREF(heap);
    Py_XDECREF(newest_ts);
    Py_XDECREF(pending);
    Py_XDECREF(noted_at);
    Py_XDECREF(vn_o);
    Py_XDECREF(wn_o);
    Py_XDECREF(entry);
    {
        sc_hint *hints[14] = {&sum_v, &sum_w,       &sum_vw, &last_num, &last_den, &num,    &den,
                              &noted_sum_w, &vn, &wn, &pub.hn, &pub.hd, &pub.wn, &pub.wd};
        for (int k = 0; k < 14; k++)
            Py_XDECREF(hints[k]->o);
    }
    PyMem_Free(micros);
    Py_DECREF(items);
    return result;
unusual:
    PyMem_Free(micros);
    Py_DECREF(items);
    Py_RETURN_NONE;
}

/* _score_hints(a, b, c, d, s, ew) -> (a + b + b, (a << s) - b, a * b * c, a * b != c * d,
 * a * b >= c * d, a * b - c * d, the window weight of |a| at ew) through the sc_hint
 * operations score_run uses (chained, so that a result past the machine range is used again):
 * for tests/unit/test_score_native.py, which holds each to Python's int arithmetic. */
static PyObject *
score_hints(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long s, ew;
    if (nargs != 6 || !PyLong_CheckExact(args[0]) || !PyLong_CheckExact(args[1]) ||
        !PyLong_CheckExact(args[2]) || !PyLong_CheckExact(args[3]) ||
        (s = PyLong_AsLong(args[4])) < 0 || (ew = PyLong_AsLong(args[5])) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "_score_hints: four ints, two counts");
        return NULL;
    }
    sc_hint h[8] = {{NULL, 0}};
    sc_hint *a = &h[0], *b = &h[1], *c = &h[2], *d = &h[3], *x = &h[4], *y = &h[5], *z = &h[6],
            *w = &h[7];
    PyObject *out = NULL, *r[4] = {NULL}, *weight = NULL;
    int ne = -1, ge = -1;
    if (sc_hint_set(a, args[0]) < 0 || sc_hint_set(b, args[1]) < 0 ||
        sc_hint_set(c, args[2]) < 0 || sc_hint_set(d, args[3]) < 0)
        goto done;
    sc_hint_copy(x, a);
    if (sc_hint_add(x, x, b, 1) < 0 || sc_hint_add(x, x, b, 1) < 0 || (r[0] = sc_hint_obj(x)) == NULL)
        goto done;
    sc_hint_copy(x, a);
    if (sc_hint_shift(x, s) < 0 || sc_hint_add(x, x, b, 0) < 0 || (r[1] = sc_hint_obj(x)) == NULL)
        goto done;
    if (sc_hint_mul(y, a, b) < 0 || sc_hint_mul(x, y, c) < 0 || (r[2] = sc_hint_obj(x)) == NULL)
        goto done;
    if ((ne = sc_hint_products(a, b, c, d, Py_NE)) < 0 ||
        (ge = sc_hint_products(a, b, c, d, Py_GE)) < 0)
        goto done;
    if (sc_hint_mul(z, c, d) < 0 || sc_hint_add(z, y, z, 0) < 0 || (r[3] = sc_hint_obj(z)) == NULL)
        goto done;
    if (a->o == NULL) {
        sc_hint_small(w, a->v < 0 ? -a->v : a->v);
    } else {
        PyObject *magnitude = PyNumber_Absolute(a->o);
        int err = magnitude ? sc_hint_set(w, magnitude) : -1;
        Py_XDECREF(magnitude);
        if (err < 0)
            goto done;
    }
    if ((weight = sc_weight(w, ew)) == NULL)
        goto done;
    out = Py_BuildValue("(OOOOOOO)", r[0], r[1], r[2], ne ? Py_True : Py_False,
                        ge ? Py_True : Py_False, r[3], weight);
done:
    for (int k = 0; k < 8; k++)
        Py_XDECREF(h[k].o);
    for (int k = 0; k < 4; k++)
        Py_XDECREF(r[k]);
    Py_XDECREF(weight);
    return out;
}

#undef SC_BOUND
#undef SC_EXPONENT

/* === end of score ========================================================================= */

/* === lake arrow: lake_columns, TableDef.to_arrow's column buffers (sinks/lake_tables.py) ===== */

/* lake_columns(items, plan) -> list | None
 *
 * The Arrow buffers of a batch's columns, read straight from the records' slots: what
 * sinks.lake_tables.TableDef.python_to_arrow (its columns, then column_array, i.e. pa.array)
 * makes of them, for the values it takes as they are. plan: one (path, kind) per column; path: the
 * member descriptors (__slots__) leading from an item to the column's value, each read only
 * from an instance of exactly its class. Per column, by kind:
 *   0 large_string: (offsets, data): int64 offsets (n + 1) and the UTF-8 bytes; each value an
 *     exact str. (No repeated-text shortcut: pa.repeat costs ~25 ns a value, these buffers
 *     ~1 ns.)
 *   1 double: (validity or None, data, nulls): each value an exact float or None (a null: its
 *     bit clear, its data 0.0).
 *   2 int64, 3 int32: data; each value an exact int in range.
 *   4 timestamp[us] from exact datetimes whose tzinfo is datetime.UTC: the µs since the epoch.
 *   5 anything: the list of the values (the caller converts it as the reference does).
 *   6 decimal128(precision, scale), the entry then (path, 6, cls, precision, scale): the
 *     16-byte little-endian unscaled values, from values of exactly class cls (decimal.Decimal)
 *     whose str is [-]digits[.digits] with at most scale places and fewer than precision
 *     digits in all once scaled (exactly what pa.array keeps as it is).
 * None, without an exception, when anything is otherwise (a subclass, a missing slot, another
 * type or zone, a string UTF-8 refuses, an int out of range, no items): the caller then takes the
 * reference, which converts (or refuses) those values itself. */

enum { LA_STRING, LA_DOUBLE, LA_INT64, LA_INT32, LA_TIMESTAMP, LA_OBJECT, LA_DECIMAL, LA_KINDS };
#define LA_DEPTH 4

typedef struct {
    int depth, kind, precision, scale;
    Py_ssize_t offset[LA_DEPTH];
    PyTypeObject *owner[LA_DEPTH];
    PyObject *cls; /* LA_DECIMAL's class (borrowed from the plan) */
} LaColumn;

/* The column's value of item: borrowed, or NULL where the path does not hold (no exception). */
static PyObject *
la_value(const LaColumn *c, PyObject *obj)
{
    for (int i = 0; i < c->depth; i++) {
        if (!Py_IS_TYPE(obj, c->owner[i]))
            return NULL;
        obj = SLOT(obj, c->offset[i]);
        if (obj == NULL)
            return NULL;
    }
    return obj;
}

/* The unscaled value of a decimal whose text is [-]digits[.digits], at scale places and below
 * 10**precision (precision <= 18), into *out: 1; 0 when the text is otherwise. */
static int
la_unscaled(const char *t, Py_ssize_t len, int precision, int scale, long long *out)
{
    Py_ssize_t i = 0;
    int negative = len > 0 && t[0] == '-', places = -1, digits = 0;
    long long x = 0, bound = 1;
    for (int k = 0; k < precision; k++)
        bound *= 10;
    i = negative;
    if (i >= len)
        return 0;
    for (; i < len; i++) {
        if (t[i] == '.' && places < 0 && digits > 0) {
            places = 0;
            continue;
        }
        if (t[i] < '0' || t[i] > '9' || ++digits > 18)
            return 0;
        x = x * 10 + (t[i] - '0');
        if (places >= 0)
            places++;
    }
    if (places == 0 || digits == 0) /* "1." or "-" */
        return 0;
    if (places < 0)
        places = 0;
    if (places > scale)
        return 0;
    for (; places < scale; places++) {
        if (x >= bound)
            return 0;
        x *= 10;
    }
    if (x >= bound)
        return 0;
    *out = negative ? -x : x;
    return 1;
}

/* One column's output while the rows are read (row by row: every column of an item read
 * together, so each record is fetched from memory once a batch rather than once a column:
 * session 30 measured the column-by-column reads at ~25 ns a value, the records of a 10,000-row
 * batch not fitting the caches). */
typedef struct {
    PyObject *data;  /* bytes (fixed, double, decimal), the offsets (string), a list (object) */
    PyObject *valid; /* a double's validity bits */
    Py_ssize_t nulls;
    char *buf; /* a string's UTF-8 */
    Py_ssize_t size, cap;
} LaOut;

/* Room for a column's n values: 0, or -1 with an error. */
static int
la_open(const LaColumn *c, LaOut *o, Py_ssize_t n)
{
    switch (c->kind) {
    case LA_STRING:
        if ((o->data = PyBytes_FromStringAndSize(NULL, (n + 1) * 8)) == NULL)
            return -1;
        ((int64_t *)PyBytes_AS_STRING(o->data))[0] = 0;
        return 0;
    case LA_DOUBLE:
        if ((o->data = PyBytes_FromStringAndSize(NULL, n * 8)) == NULL ||
            (o->valid = PyBytes_FromStringAndSize(NULL, (n + 7) / 8)) == NULL)
            return -1;
        memset(PyBytes_AS_STRING(o->valid), 0, (size_t)((n + 7) / 8));
        return 0;
    case LA_DECIMAL:
        return (o->data = PyBytes_FromStringAndSize(NULL, n * 16)) == NULL ? -1 : 0;
    case LA_OBJECT:
        return (o->data = PyList_New(n)) == NULL ? -1 : 0;
    case LA_INT32:
        return (o->data = PyBytes_FromStringAndSize(NULL, n * 4)) == NULL ? -1 : 0;
    default: /* LA_INT64, LA_TIMESTAMP */
        return (o->data = PyBytes_FromStringAndSize(NULL, n * 8)) == NULL ? -1 : 0;
    }
}

static void
la_drop(LaOut *o)
{
    Py_CLEAR(o->data);
    Py_CLEAR(o->valid);
    PyMem_RawFree(o->buf); /* (the raw allocator: grown without the GIL too, la_put_free) */
    o->buf = NULL;
}

/* Row i's text into a string column's output: 0; -1 when memory ran out (no exception set:
 * la_put_free calls it without the GIL). */
static int
la_text(LaOut *o, Py_ssize_t i, const char *text, Py_ssize_t len)
{
    if (o->size + len > o->cap) {
        Py_ssize_t want = o->cap ? o->cap : 256;
        while (want < o->size + len)
            want *= 2;
        char *grown = PyMem_RawRealloc(o->buf, (size_t)want);
        if (grown == NULL)
            return -1;
        o->buf = grown;
        o->cap = want;
    }
    memcpy(o->buf + o->size, text, (size_t)len);
    o->size += len;
    ((int64_t *)PyBytes_AS_STRING(o->data))[i + 1] = o->size;
    return 0;
}

/* A timestamp column's value: the µs since the epoch of an exact datetime in datetime.UTC
 * (1), else 0. Reads the object's fields only: callable without the GIL. */
static int
la_micros(PyObject *v, long long *us)
{
    if (!PyDateTime_CheckExact(v) || PyDateTime_DATE_GET_TZINFO(v) != PyDateTime_TimeZone_UTC)
        return 0;
    long long days =
        days_from_civil(PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v), PyDateTime_GET_DAY(v));
    *us = days * 86400000000LL +
          ((PyDateTime_DATE_GET_HOUR(v) * 60LL + PyDateTime_DATE_GET_MINUTE(v)) * 60LL +
           PyDateTime_DATE_GET_SECOND(v)) *
              1000000LL +
          PyDateTime_DATE_GET_MICROSECOND(v);
    return 1;
}

/* An int column's value x at row i: 1; 0 when it is out of the column's range. */
static int
la_int(const LaColumn *c, LaOut *o, Py_ssize_t i, long long x)
{
    if (c->kind == LA_INT32) {
        if (x < INT32_MIN || x > INT32_MAX)
            return 0;
        int32_t y = (int32_t)x;
        memcpy(PyBytes_AS_STRING(o->data) + i * 4, &y, 4);
    } else {
        memcpy(PyBytes_AS_STRING(o->data) + i * 8, &x, 8);
    }
    return 1;
}

/* Whether la_put_free fills this column's values (the rest need the GIL: la_put). */
static int
la_free_kind(const LaColumn *c)
{
    return c->kind != LA_DECIMAL && c->kind != LA_OBJECT;
}

/* la_put for a column la_free_kind takes, reading the objects' fields only, so that it runs
 * with the GIL released (lake_columns): 1 done; 0 when the value needs the GIL path (text
 * that is not compact ASCII, an int of more than two 30-bit digits, anything la_put would
 * refuse: the batch is then read again by la_put, with the GIL); -1 when memory ran out (no
 * exception set). The objects stay alive and unchanged meanwhile: the caller holds its own
 * list of the items, each record is immutable and holds what it points to. */
static int
la_put_free(const LaColumn *c, LaOut *o, Py_ssize_t i, PyObject *v)
{
    if (v == NULL)
        return 0;
    switch (c->kind) {
    case LA_STRING:
        if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_COMPACT_ASCII(v))
            return 0;
        return la_text(o, i, (const char *)PyUnicode_DATA(v), PyUnicode_GET_LENGTH(v)) < 0 ? -1
                                                                                          : 1;
    case LA_DOUBLE: {
        double *out = (double *)PyBytes_AS_STRING(o->data);
        if (v == Py_None) {
            out[i] = 0.0;
            o->nulls++;
        } else if (PyFloat_CheckExact(v)) {
            out[i] = PyFloat_AS_DOUBLE(v);
            PyBytes_AS_STRING(o->valid)[i / 8] |= (char)(1u << (i % 8));
        } else {
            return 0;
        }
        return 1;
    }
    case LA_TIMESTAMP: {
        long long us;
        if (!la_micros(v, &us))
            return 0;
        memcpy(PyBytes_AS_STRING(o->data) + i * 8, &us, 8);
        return 1;
    }
    default: { /* LA_INT64, LA_INT32: CPython 3.11's digits, at most two (60 bits) */
        if (!PyLong_CheckExact(v))
            return 0;
        Py_ssize_t size = Py_SIZE(v);
        const digit *d = ((PyLongObject *)v)->ob_digit;
        long long x;
        if (size == 0)
            x = 0;
        else if (size == 1 || size == -1)
            x = (long long)d[0];
        else if (size == 2 || size == -2)
            x = (long long)d[0] | ((long long)d[1] << PyLong_SHIFT);
        else
            return 0;
        if (size < 0)
            x = -x;
        return la_int(c, o, i, x);
    }
    }
}

/* Row i's value v of the column into its output: 1; 0 when the reference must convert the
 * batch (a value of another type, zone or range); -1 with an error. */
static int
la_put(const LaColumn *c, LaOut *o, Py_ssize_t i, PyObject *v)
{
    if (v == NULL)
        return 0;
    if (la_free_kind(c)) {
        int got = la_put_free(c, o, i, v);
        if (got != 0) {
            if (got < 0)
                PyErr_NoMemory();
            return got;
        }
        /* What only the GIL path converts: text that is not compact ASCII, a larger int. */
        if (c->kind == LA_STRING) {
            Py_ssize_t len;
            const char *text;
            if (!PyUnicode_CheckExact(v))
                return 0;
            if ((text = PyUnicode_AsUTF8AndSize(v, &len)) == NULL) {
                PyErr_Clear(); /* (the reference raises pyarrow's error for it) */
                return 0;
            }
            if (la_text(o, i, text, len) < 0) {
                PyErr_NoMemory();
                return -1;
            }
            return 1;
        }
        if ((c->kind != LA_INT64 && c->kind != LA_INT32) || !PyLong_CheckExact(v))
            return 0;
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        return la_int(c, o, i, x);
    }
    if (c->kind == LA_OBJECT) {
        PyList_SET_ITEM(o->data, i, Py_NewRef(v));
        return 1;
    }
    /* LA_DECIMAL */
    if ((PyObject *)Py_TYPE(v) != c->cls)
        return 0;
    PyObject *text = PyObject_Str(v); /* (the class's own __str__, in C) */
    if (text == NULL)
        return -1;
    Py_ssize_t len;
    const char *t = PyUnicode_AsUTF8AndSize(text, &len);
    long long x;
    int ok = t != NULL && la_unscaled(t, len, c->precision, c->scale, &x);
    Py_DECREF(text);
    if (!ok) {
        PyErr_Clear();
        return 0;
    }
    long long high = x < 0 ? -1 : 0;
    char *out = PyBytes_AS_STRING(o->data) + i * 16;
    memcpy(out, &x, 8);
    memcpy(out + 8, &high, 8);
    return 1;
}

/* The column's value for the caller (see lake_columns), its output taken: NULL with an error. */
static PyObject *
la_close(const LaColumn *c, LaOut *o)
{
    PyObject *data;
    switch (c->kind) {
    case LA_STRING:
        data = PyBytes_FromStringAndSize(o->buf ? o->buf : "", o->size);
        PyMem_RawFree(o->buf);
        o->buf = NULL;
        if (data == NULL)
            return NULL;
        return Py_BuildValue("(NN)", Py_NewRef(o->data), data);
    case LA_DOUBLE:
        if (o->nulls == 0)
            return Py_BuildValue("(ONn)", Py_None, Py_NewRef(o->data), o->nulls);
        return Py_BuildValue("(NNn)", Py_NewRef(o->valid), Py_NewRef(o->data), o->nulls);
    default:
        return Py_NewRef(o->data);
    }
}

static PyObject *
lake_columns(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "lake_columns(items: list, plan: tuple)");
        return NULL;
    }
    PyObject *items = args[0], *plan = args[1];
    Py_ssize_t n = PyList_GET_SIZE(items), ncols = PyTuple_GET_SIZE(plan);
    LaColumn *cols = PyMem_Calloc((size_t)(ncols ? ncols : 1), sizeof(LaColumn));
    if (cols == NULL)
        return PyErr_NoMemory();
    PyObject *out = NULL;
    for (Py_ssize_t j = 0; j < ncols; j++) {
        PyObject *entry = PyTuple_GET_ITEM(plan, j), *path;
        long kind;
        Py_ssize_t size = PyTuple_Check(entry) ? PyTuple_GET_SIZE(entry) : 0;
        if ((size != 2 && size != 5) || !PyTuple_Check(path = PyTuple_GET_ITEM(entry, 0)) ||
            PyTuple_GET_SIZE(path) < 1 || PyTuple_GET_SIZE(path) > LA_DEPTH ||
            (kind = PyLong_AsLong(PyTuple_GET_ITEM(entry, 1))) < 0 || kind >= LA_KINDS ||
            (kind == LA_DECIMAL) != (size == 5)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "lake_columns: a plan entry is (1 to 4 slots, "
                                                 "kind 0-5) or (slots, 6, cls, precision, scale)");
            goto done;
        }
        cols[j].kind = (int)kind;
        if (kind == LA_DECIMAL) {
            cols[j].cls = PyTuple_GET_ITEM(entry, 2);
            long precision = PyLong_AsLong(PyTuple_GET_ITEM(entry, 3));
            long scale = PyLong_AsLong(PyTuple_GET_ITEM(entry, 4));
            if (!PyType_Check(cols[j].cls) || precision < 1 || precision > 18 || scale < 0 ||
                scale > precision) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError,
                                    "lake_columns: a decimal's class, precision 1-18, scale");
                goto done;
            }
            cols[j].precision = (int)precision;
            cols[j].scale = (int)scale;
        }
        cols[j].depth = (int)PyTuple_GET_SIZE(path);
        for (int i = 0; i < cols[j].depth; i++)
            if ((cols[j].offset[i] = slot_offset(PyTuple_GET_ITEM(path, i), &cols[j].owner[i])) <
                0)
                goto done;
    }
    if (n == 0) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    /* The items stay alive and unchanged: nothing below calls back into Python code (a
     * decimal's str is its class's own, in C). */
    LaOut *outs = PyMem_Calloc((size_t)ncols, sizeof(LaOut));
    if (outs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int got = 1;
    for (Py_ssize_t j = 0; j < ncols && got > 0; j++)
        if (la_open(&cols[j], &outs[j], n) < 0)
            got = -1;
    /* First without the GIL (the lake's writer thread otherwise holds it while the worker
     * waits: ~0.18 s of a 200,000-signal run, session 30): the columns la_put_free takes, from
     * a list of the items of our own (no other thread can change it). Then, with the GIL, the
     * other columns; or, where a value needs the GIL, the whole batch again by la_put. */
    PyObject *own = NULL;
    if (got > 0 && (own = PyList_GetSlice(items, 0, n)) == NULL)
        got = -1;
    /* 1: la_put_free filled its columns; 0: a value needs the GIL; -1: memory ran out. */
    int free_got = 0;
    if (got > 0) {
        free_got = 1;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n && free_got > 0; i++) {
            PyObject *item = PyList_GET_ITEM(own, i);
            for (Py_ssize_t j = 0; j < ncols && free_got > 0; j++)
                if (la_free_kind(&cols[j]))
                    free_got = la_put_free(&cols[j], &outs[j], i, la_value(&cols[j], item));
        }
        Py_END_ALLOW_THREADS
        if (free_got < 0) {
            PyErr_NoMemory();
            got = -1;
        }
    }
    for (Py_ssize_t j = 0; j < ncols && got > 0 && free_got == 0; j++) {
        la_drop(&outs[j]); /* a value needs the GIL: every column again, row by row */
        memset(&outs[j], 0, sizeof(LaOut));
        if (la_open(&cols[j], &outs[j], n) < 0)
            got = -1;
    }
    for (Py_ssize_t i = 0; i < n && got > 0; i++) {
        PyObject *item = PyList_GET_ITEM(own, i);
        for (Py_ssize_t j = 0; j < ncols && got > 0; j++)
            if (free_got == 0 || !la_free_kind(&cols[j]))
                got = la_put(&cols[j], &outs[j], i, la_value(&cols[j], item));
    }
    Py_XDECREF(own);
    if (got > 0 && (out = PyList_New(ncols)) != NULL) {
        for (Py_ssize_t j = 0; j < ncols; j++) {
            PyObject *col = la_close(&cols[j], &outs[j]);
            if (col == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, j, col);
        }
    } else if (got == 0) {
        out = Py_NewRef(Py_None);
    }
    for (Py_ssize_t j = 0; j < ncols; j++)
        la_drop(&outs[j]);
    PyMem_Free(outs);
done:
    PyMem_Free(cols);
    return out;
}

/* === end of lake arrow ==================================================================== */

/* === drift run: TenantDrift.push_batch's plain path (branch driftc, session 20) ============= *
 * drift_run(self, attrs, items, start, out, config, checks_markers) -> int: the plain records of
 * items from start on, as operators/drift.py TenantDrift.push_batch's Python loop (its
 * reference, native=False) takes them: the same steps in the same order, the same objects
 * (an _Entry and a _Batch built with object.__new__ and their slots set through their
 * descriptors, as their __init__ sets them), the same state (attrs: self.__dict__, its
 * _event_time and _next_deadline set as the loop sets them; _open, _fifo, _types changed in
 * place), and every close, expiry and late batch through the very methods the loop calls
 * (self._expire, self._close, self._late). It returns the index of the first record it leaves
 * to the Python loop, having changed nothing for it: a record not of the exact classes, with
 * unknown fields, a canary, another tenant, one whose marker is to be checked, a slot unset, an
 * event time that does not compare. An error once a record is under way propagates, as the
 * loop's would at the same step. config: operators.drift._RUN_CONFIG. */
enum {
    DR_DECODED, DR_SIGNAL, DR_D_SIGNAL, DR_D_UNKNOWN, DR_D_RAW, DR_S_TENANT, DR_S_TYPE, DR_S_TS,
    DR_S_VALUE, DR_ENTRY, DR_E_ITEM, DR_E_OUT, DR_BATCH, DR_B_TYPE, DR_B_ID, DR_B_DEADLINE,
    DR_B_ENTRIES, DR_B_VALUES, DR_B_EXTENDED, DR_CANARY, DR_END_OF_TIME, DR_DECODED_SLOTS,
    DR_RAW, DR_R_HEADERS, DR_TYPESTATE, DR_T_WINDOW, DR_T_REFERENCE, DR_T_LEARNED,
    DR_T_LEARNING, DR_SAMPLE, DR_REF_BELOW, DR_SMOOTHING, DR_CONFIG_SIZE
};

static PyObject *s_dr_event_time, *s_dr_next_deadline, *s_dr_open, *s_dr_fifo, *s_dr_types,
    *s_dr_tenant, *s_dr_batch_size, *s_dr_min_batch, *s_dr_min_share, *s_dr_batch_seconds,
    *s_dr_expire, *s_dr_close, *s_dr_late, *s_dr_append, *s_dr_popleft, *s_dr_settings,
    *s_dr_tally, *s_dr_learning, *s_dr_reference_batches, *s_dr_reference_values,
    *s_dr_passed, *s_dr_psi_threshold, *s_dr_ks_alpha, *s_dr_window_batches, *s_dr_proportions,
    *s_dr_edges, *s_dr_values, *s_dr_small_wait;

static int
drift_run_names(void)
{
    if (s_dr_popleft != NULL)
        return 0;
    if ((s_dr_event_time = PyUnicode_InternFromString("_event_time")) == NULL ||
        (s_dr_next_deadline = PyUnicode_InternFromString("_next_deadline")) == NULL ||
        (s_dr_open = PyUnicode_InternFromString("_open")) == NULL ||
        (s_dr_fifo = PyUnicode_InternFromString("_fifo")) == NULL ||
        (s_dr_types = PyUnicode_InternFromString("_types")) == NULL ||
        (s_dr_tenant = PyUnicode_InternFromString("tenant_id")) == NULL ||
        (s_dr_batch_size = PyUnicode_InternFromString("_batch_size")) == NULL ||
        (s_dr_min_batch = PyUnicode_InternFromString("_min_batch_size")) == NULL ||
        (s_dr_min_share = PyUnicode_InternFromString("_min_share")) == NULL ||
        (s_dr_batch_seconds = PyUnicode_InternFromString("_batch_seconds")) == NULL ||
        (s_dr_expire = PyUnicode_InternFromString("_expire")) == NULL ||
        (s_dr_close = PyUnicode_InternFromString("_close")) == NULL ||
        (s_dr_late = PyUnicode_InternFromString("_late")) == NULL ||
        (s_dr_append = PyUnicode_InternFromString("append")) == NULL ||
        (s_dr_settings = PyUnicode_InternFromString("_settings")) == NULL ||
        (s_dr_tally = PyUnicode_InternFromString("_tally")) == NULL ||
        (s_dr_learning = PyUnicode_InternFromString("learning")) == NULL ||
        (s_dr_reference_batches = PyUnicode_InternFromString("reference_batches")) == NULL ||
        (s_dr_reference_values = PyUnicode_InternFromString("reference_values")) == NULL ||
        (s_dr_passed = PyUnicode_InternFromString("passed")) == NULL ||
        (s_dr_psi_threshold = PyUnicode_InternFromString("psi_threshold")) == NULL ||
        (s_dr_ks_alpha = PyUnicode_InternFromString("ks_alpha")) == NULL ||
        (s_dr_window_batches = PyUnicode_InternFromString("window_batches")) == NULL ||
        (s_dr_proportions = PyUnicode_InternFromString("proportions")) == NULL ||
        (s_dr_edges = PyUnicode_InternFromString("edges")) == NULL ||
        (s_dr_values = PyUnicode_InternFromString("values")) == NULL ||
        (s_dr_small_wait = PyUnicode_InternFromString("_small_wait")) == NULL ||
        (s_dr_popleft = PyUnicode_InternFromString("popleft")) == NULL)
        return -1;
    return 0;
}

/* A slot of exactly cls's instances at its offset, or -1 (no exception set). */
static Py_ssize_t
drift_run_slot(PyObject *descr, PyObject *cls)
{
    return dedupe_slot(descr, cls);
}

/* A positive int of attrs (clamped to PY_SSIZE_T_MAX), or -1 (no exception set). */
static Py_ssize_t
drift_run_size(PyObject *attrs, PyObject *name)
{
    PyObject *value = PyDict_GetItemWithError(attrs, name);
    if (value == NULL || !PyLong_CheckExact(value)) {
        PyErr_Clear();
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow > 0)
        return PY_SSIZE_T_MAX;
    if (overflow < 0 || v < 1) {
        PyErr_Clear();
        return -1;
    }
    return v > PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)v;
}

/* Set a slot through its descriptor (steals nothing). */
static int
drift_run_set(PyObject *descr, PyObject *obj, PyObject *value)
{
    return Py_TYPE(descr)->tp_descr_set(descr, obj, value);
}

/* tally[name] = tally.get(name, 0) + 1: 0, or -1 with an exception. */
static int
drift_tally(PyObject *tally, PyObject *name)
{
    PyObject *before = PyDict_GetItemWithError(tally, name);
    if (before == NULL && PyErr_Occurred())
        return -1;
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL)
        return -1;
    PyObject *seen = before == NULL ? Py_NewRef(one) : PyNumber_Add(before, one);
    Py_DECREF(one);
    if (seen == NULL)
        return -1;
    int failed = PyDict_SetItem(tally, name, seen);
    Py_DECREF(seen);
    return failed;
}

/* Each entry's out is its item (the entries: a list of exactly cfg's _Entry): 0, or -1. */
static int
drift_pass_entries(PyObject *entries, PyObject *const *cfg)
{
    for (Py_ssize_t e = 0; e < PyList_GET_SIZE(entries); e++) {
        PyObject *entry = PyList_GET_ITEM(entries, e);
        PyObject *item = Py_TYPE(cfg[DR_E_ITEM])->tp_descr_get(cfg[DR_E_ITEM], entry,
                                                              cfg[DR_ENTRY]);
        int failed = item == NULL || drift_run_set(cfg[DR_E_OUT], entry, item) < 0;
        Py_XDECREF(item);
        if (failed)
            return -1;
    }
    return 0;
}

/* A slot of obj through its descriptor (a new reference), or NULL with an exception. */
static PyObject *
drift_run_get(PyObject *descr, PyObject *obj, PyObject *cls)
{
    return Py_TYPE(descr)->tp_descr_get(descr, obj, cls);
}

/* Whether every item of entries (a list) is exactly cfg's _Entry. */
static int
drift_entries_ok(PyObject *entries, PyObject *const *cfg)
{
    for (Py_ssize_t e = 0; e < PyList_GET_SIZE(entries); e++)
        if (Py_TYPE(PyList_GET_ITEM(entries, e)) != (PyTypeObject *)cfg[DR_ENTRY])
            return 0;
    return 1;
}

/* A type's state's reference: 1 learned or given, 0 None (learning), -1 unreadable (no
 * exception left set). */
static int
drift_has_reference(PyObject *state, PyObject *const *cfg)
{
    PyObject *reference = drift_run_get(cfg[DR_T_REFERENCE], state, cfg[DR_TYPESTATE]);
    if (reference == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_DECREF(reference); /* (held by the state) */
    return reference != Py_None;
}

/* size plus the values of each sample of window (size + _window_size(state)), or -1 with an
 * exception set. */
static Py_ssize_t
drift_window_held(PyObject *window, Py_ssize_t size)
{
    PyObject *it = PyObject_GetIter(window), *sample;
    if (it == NULL)
        return -1;
    while ((sample = PyIter_Next(it)) != NULL) {
        Py_ssize_t len = PyObject_Size(sample);
        Py_DECREF(sample);
        if (len < 0)
            break;
        size += len;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : size;
}

/* min(map(_DEADLINE, batches)) over a list of exactly cfg's _Batch: the first of equal ones
 * (borrowed: valid while the list holds it), Py_None for an empty list; NULL with an
 * exception. */
static PyObject *
drift_earliest(PyObject *batches, PyObject *const *cfg, Py_ssize_t o_deadline)
{
    PyObject *earliest = Py_None;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(batches); i++) {
        PyObject *batch = PyList_GET_ITEM(batches, i);
        PyObject *at = Py_TYPE(batch) == (PyTypeObject *)cfg[DR_BATCH] ? SLOT(batch, o_deadline)
                                                                        : NULL;
        if (at == NULL) {
            PyErr_SetString(PyExc_TypeError, "drift_run: an open batch of another class");
            return NULL;
        }
        int earlier = earliest == Py_None ? 1 : PyObject_RichCompareBool(at, earliest, Py_LT);
        if (earlier < 0)
            return NULL;
        if (earlier)
            earliest = at;
    }
    return earliest;
}

/* TenantDrift._expire's common case at the new event time ts: the one open batch, of a type
 * learning its reference, is past its deadline. Then, as _expire, _learn and _learned do: the
 * batch leaves _open, its records pass (each entry's out is its item), its values join the
 * type's learning, its learned count grows, the tally counts a "learning" batch, and the next
 * deadline is None. 1: done; 0: not this case, or a batch that completes the reference (its
 * Reference is built in Python), or anything unusual, with nothing changed (the caller calls
 * self._expire); -1: an error, as _expire would raise at the same step. */
static int
drift_learn_close(PyObject *attrs, PyObject *open_, PyObject *types, PyObject *ts,
                  PyObject *const *cfg, Py_ssize_t o_entries, Py_ssize_t o_values,
                  Py_ssize_t o_deadline)
{
    if (PyDict_GET_SIZE(open_) != 1)
        return 0;
    Py_ssize_t pos = 0;
    PyObject *key, *only;
    if (!PyDict_Next(open_, &pos, &key, &only) || !PyUnicode_CheckExact(key) ||
        Py_TYPE(only) != (PyTypeObject *)cfg[DR_BATCH])
        return 0;
    PyObject *state = PyDict_GetItemWithError(types, key);
    if (state == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (Py_TYPE(state) != (PyTypeObject *)cfg[DR_TYPESTATE] || drift_has_reference(state, cfg))
        return 0; /* (a reference, or none readable) */
    PyObject *deadline = SLOT(only, o_deadline), *entries = SLOT(only, o_entries),
             *values = SLOT(only, o_values);
    if (deadline == NULL || entries == NULL || values == NULL || !PyList_CheckExact(entries) ||
        !PyList_CheckExact(values))
        return 0;
    int due = PyObject_RichCompareBool(deadline, ts, Py_LE);
    if (due <= 0)
        return due;
    /* Nothing is changed until every part is known to be what this path handles. */
    PyObject *learned_obj = drift_run_get(cfg[DR_T_LEARNED], state, cfg[DR_TYPESTATE]);
    PyObject *learning = drift_run_get(cfg[DR_T_LEARNING], state, cfg[DR_TYPESTATE]);
    PyObject *settings = PyDict_GetItemWithError(attrs, s_dr_settings),
             *tally = PyDict_GetItemWithError(attrs, s_dr_tally);
    PyObject *batches = NULL, *wanted = NULL;
    long long learned, at_least, values_needed;
    int result = 0;
    if (learned_obj == NULL || learning == NULL || settings == NULL || tally == NULL ||
        !PyList_CheckExact(learning) || !PyDict_CheckExact(tally) ||
        !exact_int64(learned_obj, &learned) || learned >= LLONG_MAX)
        goto out;
    batches = PyObject_GetAttr(settings, s_dr_reference_batches);
    wanted = PyObject_GetAttr(settings, s_dr_reference_values);
    if (!exact_int64(batches, &at_least) || !exact_int64(wanted, &values_needed))
        goto out;
    if (at_least < 1)
        at_least = 1;
    Py_ssize_t held = PyList_GET_SIZE(learning) + PyList_GET_SIZE(values);
    if ((learned + 1 >= at_least && held >= values_needed) || !drift_entries_ok(entries, cfg))
        goto out; /* (a complete reference: _learned builds it) */
    /* del open_[key]; _learn; _learned; the tally; self._next_deadline = None */
    result = -1;
    Py_INCREF(key);
    Py_INCREF(only);
    int failed = PyDict_DelItem(open_, key) < 0;
    failed = failed || drift_pass_entries(entries, cfg) < 0;
    PyObject *count = NULL;
    if (!failed) {
        Py_ssize_t end = PyList_GET_SIZE(learning);
        failed = PyList_SetSlice(learning, end, end, values) < 0 ||
                 (count = PyLong_FromLongLong(learned + 1)) == NULL ||
                 drift_run_set(cfg[DR_T_LEARNED], state, count) < 0 ||
                 drift_tally(tally, s_dr_learning) < 0 ||
                 PyDict_SetItem(attrs, s_dr_next_deadline, Py_None) < 0;
    }
    Py_XDECREF(count);
    Py_DECREF(key);
    Py_DECREF(only);
    result = failed ? -1 : 1;
out:
    if (result == 0)
        PyErr_Clear(); /* (a settings attribute that was not there: the Python path says) */
    Py_XDECREF(learned_obj);
    Py_XDECREF(learning);
    Py_XDECREF(batches);
    Py_XDECREF(wanted);
    return result;
}

enum { DRIFT_EXTEND_MAX = 64 };

/* Whether an open batch past its deadline is one _time_up extends: of a type with its
 * reference, not extended yet, not judgeable (fewer than min_batch values, and too few to be
 * judged through its window). 1, else 0 (no exception left set). */
static int
drift_extends(PyObject *types, PyObject *key, PyObject *batch, PyObject *const *cfg,
              Py_ssize_t o_entries, Py_ssize_t o_extended, Py_ssize_t min_batch,
              Py_ssize_t min_share)
{
    PyObject *entries = SLOT(batch, o_entries), *extended = SLOT(batch, o_extended);
    PyObject *state = PyUnicode_CheckExact(key) ? PyDict_GetItemWithError(types, key) : NULL;
    if (state == NULL || Py_TYPE(state) != (PyTypeObject *)cfg[DR_TYPESTATE] ||
        entries == NULL || !PyList_CheckExact(entries) || extended != Py_False) {
        PyErr_Clear(); /* (no state: _has_reference asks the baseline) */
        return 0;
    }
    Py_ssize_t size = PyList_GET_SIZE(entries);
    if (drift_has_reference(state, cfg) != 1 || size >= min_batch)
        return 0; /* learning, or judgeable: _close_expired learns it, _time_up closes it */
    if (size < min_share)
        return 1;
    PyObject *window = drift_run_get(cfg[DR_T_WINDOW], state, cfg[DR_TYPESTATE]);
    Py_ssize_t held = window == NULL ? -1 : drift_window_held(window, size);
    Py_XDECREF(window);
    if (held < 0)
        PyErr_Clear();
    return held >= 0 && held < min_batch; /* else judgeable through its window */
}

/* TenantDrift._expire at the new event time ts where every batch past its deadline gets more
 * time (drift_extends: the common case past learning, a type's batch too small to be judged
 * when its time is up). Then, as _close_expired and _time_up do: each of them, in _open's
 * order, is extended, its deadline max(deadline, ts) + _small_wait (the end of time past
 * datetime's range), and the next deadline is min()'s over the open batches (the first of
 * equal ones). 1: done; 0: not this case, nothing changed (the caller calls self._expire:
 * a batch to learn or to close, no batch due, a comparison that fails, the unusual); -1: an
 * error. */
static int
drift_extend(PyObject *attrs, PyObject *open_, PyObject *types, PyObject *ts,
             PyObject *const *cfg, Py_ssize_t o_entries, Py_ssize_t o_deadline,
             Py_ssize_t o_extended, Py_ssize_t min_batch, Py_ssize_t min_share)
{
    int due[DRIFT_EXTEND_MAX], any = 0, result = 0;
    PyObject *small_wait = PyDict_GetItemWithError(attrs, s_dr_small_wait);
    if (small_wait == NULL || PyDict_GET_SIZE(open_) > DRIFT_EXTEND_MAX) {
        PyErr_Clear();
        return 0;
    }
    /* _open's keys and batches, held: datetime arithmetic and comparisons could run Python */
    PyObject *keys = PyDict_Keys(open_), *batches = PyDict_Values(open_);
    if (keys == NULL || batches == NULL) {
        result = -1;
        goto done;
    }
    Py_ssize_t count = PyList_GET_SIZE(batches);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *batch = PyList_GET_ITEM(batches, i);
        if (Py_TYPE(batch) != (PyTypeObject *)cfg[DR_BATCH] || SLOT(batch, o_deadline) == NULL)
            goto done;
        due[i] = PyObject_RichCompareBool(SLOT(batch, o_deadline), ts, Py_LE);
        if (due[i] < 0 || (due[i] && !drift_extends(types, PyList_GET_ITEM(keys, i), batch, cfg,
                                                     o_entries, o_extended, min_batch,
                                                     min_share))) {
            PyErr_Clear(); /* (a comparison that fails: _close_expired raises it) */
            goto done;
        }
        any |= due[i];
    }
    if (!any)
        goto done;
    result = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!due[i])
            continue;
        PyObject *batch = PyList_GET_ITEM(batches, i), *deadline = SLOT(batch, o_deadline);
        int later = PyObject_RichCompareBool(ts, deadline, Py_GT); /* max(deadline, now) */
        if (later < 0)
            goto done;
        PyObject *extended_to = PyNumber_Add(later ? ts : deadline, small_wait);
        if (extended_to == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                goto done;
            PyErr_Clear();
            extended_to = Py_NewRef(cfg[DR_END_OF_TIME]);
        }
        int failed = drift_run_set(cfg[DR_B_EXTENDED], batch, Py_True) < 0 ||
                     drift_run_set(cfg[DR_B_DEADLINE], batch, extended_to) < 0;
        Py_DECREF(extended_to);
        if (failed)
            goto done;
    }
    PyObject *earliest = drift_earliest(batches, cfg, o_deadline);
    if (earliest != NULL && PyDict_SetItem(attrs, s_dr_next_deadline, earliest) == 0)
        result = 1;
done:
    Py_XDECREF(keys);
    Py_XDECREF(batches);
    return result;
}

static PyObject *drift_passes(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

/* TenantDrift._close(kind, batch) (its next deadline recomputed) of a batch that passes, as
 * _close and _decide do it: a type with its reference, judged alone or through its window,
 * drifted_check's C passes (drift_passes) saying "passed". Then: the batch leaves _open, the
 * next deadline is the first earliest of the open batches' (min's), its records pass, its
 * sorted values join the type's window (a _Sample; the oldest go past window_batches), the
 * tally counts "passed". 1: done; 0: not this case, nothing changed (the caller calls
 * self._close: a schema batch, a new type, a learning one, a batch too small, a drift, a KS
 * statistic to compute, anything unusual); -1: an error. */
static int
drift_close_passed(PyObject *attrs, PyObject *open_, PyObject *types, PyObject *kind,
                   PyObject *batch, PyObject *const *cfg, Py_ssize_t o_entries,
                   Py_ssize_t o_values, Py_ssize_t o_deadline, Py_ssize_t min_batch,
                   Py_ssize_t min_share)
{
    PyObject *state_cls = cfg[DR_TYPESTATE];
    if (Py_TYPE(batch) != (PyTypeObject *)cfg[DR_BATCH] || !PyUnicode_CheckExact(kind))
        return 0;
    PyObject *entries = SLOT(batch, o_entries), *values = SLOT(batch, o_values);
    PyObject *state = PyDict_GetItemWithError(types, kind);
    if (state == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (Py_TYPE(state) != (PyTypeObject *)state_cls || entries == NULL || values == NULL ||
        !PyList_CheckExact(entries) || !PyList_CheckExact(values) ||
        !drift_entries_ok(entries, cfg))
        return 0;
    PyObject *type = NULL, *reference = NULL, *window = NULL, *pooled = NULL, *settings,
             *tally, *psi = NULL, *alpha = NULL, *keep = NULL, *proportions = NULL,
             *edges = NULL, *ref_values = NULL, *below = NULL, *n = NULL, *passed = NULL;
    int result = 0;
    type = drift_run_get(cfg[DR_B_TYPE], batch, cfg[DR_BATCH]);
    reference = drift_run_get(cfg[DR_T_REFERENCE], state, state_cls);
    window = drift_run_get(cfg[DR_T_WINDOW], state, state_cls);
    settings = PyDict_GetItemWithError(attrs, s_dr_settings);
    tally = PyDict_GetItemWithError(attrs, s_dr_tally);
    if (type == NULL || reference == NULL || window == NULL || settings == NULL ||
        tally == NULL || !PyDict_CheckExact(tally) || !PyUnicode_CheckExact(type) ||
        PyUnicode_Compare(type, kind) != 0 || reference == Py_None)
        goto out; /* (the schema batch, a learning type: _decide's other branches) */
    if ((pooled = PySequence_Tuple(window)) == NULL)
        goto out;
    Py_ssize_t size = PyList_GET_SIZE(entries);
    int alone = size >= min_batch;
    if (!alone) { /* _through_window(size, state), else "too_small" */
        Py_ssize_t held = drift_window_held(pooled, size);
        if (held < 0 || size < min_share || held < min_batch)
            goto out;
    }
    psi = PyObject_GetAttr(settings, s_dr_psi_threshold);
    alpha = PyObject_GetAttr(settings, s_dr_ks_alpha);
    keep = PyObject_GetAttr(settings, s_dr_window_batches);
    proportions = PyObject_GetAttr(reference, s_dr_proportions);
    edges = PyObject_GetAttr(reference, s_dr_edges);
    ref_values = PyObject_GetAttr(reference, s_dr_values);
    if (psi == NULL || alpha == NULL || keep == NULL || !PyLong_CheckExact(keep) ||
        proportions == NULL || edges == NULL || ref_values == NULL)
        goto out;
    Py_ssize_t ref_n = PyObject_Size(ref_values);
    if (ref_n < 0 || (below = PyObject_CallOneArg(cfg[DR_REF_BELOW], reference)) == NULL ||
        (n = PyLong_FromSsize_t(ref_n)) == NULL)
        goto out;
    {
        PyObject *args[10] = {proportions, edges, below, n, values, pooled, psi, alpha,
                              alone ? Py_True : Py_False, cfg[DR_SMOOTHING]};
        passed = drift_passes(NULL, args, 10);
    }
    if (passed != Py_True)
        goto out;
    /* _close: del self._open[key]; the next deadline; _decide's window; the records; tally */
    result = -1;
    if (PyDict_DelItem(open_, kind) < 0)
        goto out;
    {
        /* min(map(_DEADLINE, open_.values())) over a copy of them (held: a comparison could
         * run Python code) */
        PyObject *open_batches = PyDict_Values(open_);
        PyObject *earliest = open_batches == NULL ? NULL
                                                  : drift_earliest(open_batches, cfg, o_deadline);
        int failed = earliest == NULL || PyDict_SetItem(attrs, s_dr_next_deadline, earliest) < 0;
        Py_XDECREF(open_batches);
        if (failed)
            goto out;
    }
    {
        PyObject *ordered = PyList_GetSlice(values, 0, PyList_GET_SIZE(values));
        if (ordered == NULL)
            goto out;
        PyObject *sample = PyList_Sort(ordered) < 0 ? NULL
                                                    : PyObject_CallOneArg(cfg[DR_SAMPLE], ordered);
        Py_DECREF(ordered);
        if (sample == NULL)
            goto out;
        PyObject *r = PyObject_CallMethodOneArg(window, s_dr_append, sample);
        Py_DECREF(sample);
        if (r == NULL)
            goto out;
        Py_DECREF(r);
        long long limit;
        if (!exact_int64(keep, &limit))
            limit = LLONG_MAX; /* (checked a plain int above: past int64, nothing to drop) */
        for (;;) {
            Py_ssize_t len = PyObject_Size(window);
            if (len < 0)
                goto out;
            if (len <= limit)
                break;
            r = PyObject_CallMethodNoArgs(window, s_dr_popleft);
            if (r == NULL)
                goto out;
            Py_DECREF(r);
        }
    }
    if (drift_pass_entries(entries, cfg) < 0 || drift_tally(tally, s_dr_passed) < 0)
        goto out;
    result = 1;
out:
    if (result == 0)
        PyErr_Clear();
    Py_XDECREF(type);
    Py_XDECREF(reference);
    Py_XDECREF(window);
    Py_XDECREF(pooled);
    Py_XDECREF(psi);
    Py_XDECREF(alpha);
    Py_XDECREF(keep);
    Py_XDECREF(proportions);
    Py_XDECREF(edges);
    Py_XDECREF(ref_values);
    Py_XDECREF(below);
    Py_XDECREF(n);
    Py_XDECREF(passed);
    return result;
}

/* The out slot of the fifo's head entry (a new reference), or NULL with an exception. */
static PyObject *
drift_run_head(PyObject *fifo, PyObject *out_descr, PyObject *entry_cls)
{
    PyObject *head = PySequence_GetItem(fifo, 0);
    if (head == NULL)
        return NULL;
    PyObject *result = Py_TYPE(out_descr)->tp_descr_get(out_descr, head, entry_cls);
    Py_DECREF(head);
    return result;
}

static PyObject *
drift_run(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyDict_CheckExact(args[1]) || !PyList_CheckExact(args[2]) ||
        !PyLong_CheckExact(args[3]) || !PyList_CheckExact(args[4]) ||
        !PyTuple_CheckExact(args[5]) || PyTuple_GET_SIZE(args[5]) != DR_CONFIG_SIZE) {
        PyErr_SetString(PyExc_TypeError,
                        "drift_run(self, attrs, items, start, out, config, checks_markers)");
        return NULL;
    }
    PyObject *self = args[0], *attrs = args[1], *items = args[2], *out = args[4];
    PyObject *const *cfg = &PyTuple_GET_ITEM(args[5], 0);
    Py_ssize_t start = PyLong_AsSsize_t(args[3]);
    if (start < 0) {
        if (PyErr_Occurred())
            return NULL;
        PyErr_SetString(PyExc_ValueError, "drift_run: start must be >= 0");
        return NULL;
    }
    int checks_markers = PyObject_IsTrue(args[6]);
    if (checks_markers < 0 || drift_run_names() < 0)
        return NULL;
    PyObject *decoded_cls = cfg[DR_DECODED], *signal_cls = cfg[DR_SIGNAL];
    Py_ssize_t o_signal = drift_run_slot(cfg[DR_D_SIGNAL], decoded_cls),
               o_unknown = drift_run_slot(cfg[DR_D_UNKNOWN], decoded_cls),
               o_raw = drift_run_slot(cfg[DR_D_RAW], decoded_cls),
               o_tenant = drift_run_slot(cfg[DR_S_TENANT], signal_cls),
               o_type = drift_run_slot(cfg[DR_S_TYPE], signal_cls),
               o_ts = drift_run_slot(cfg[DR_S_TS], signal_cls),
               o_value = drift_run_slot(cfg[DR_S_VALUE], signal_cls),
               o_headers = drift_run_slot(cfg[DR_R_HEADERS], cfg[DR_RAW]),
               o_entries = drift_run_slot(cfg[DR_B_ENTRIES], cfg[DR_BATCH]),
               o_values = drift_run_slot(cfg[DR_B_VALUES], cfg[DR_BATCH]),
               o_extended = drift_run_slot(cfg[DR_B_EXTENDED], cfg[DR_BATCH]),
               o_deadline = drift_run_slot(cfg[DR_B_DEADLINE], cfg[DR_BATCH]);
    PyObject *descrs[] = {cfg[DR_E_ITEM], cfg[DR_E_OUT], cfg[DR_B_TYPE], cfg[DR_B_ID],
                          cfg[DR_B_DEADLINE], cfg[DR_B_ENTRIES], cfg[DR_B_VALUES],
                          cfg[DR_B_EXTENDED], cfg[DR_T_WINDOW], cfg[DR_T_REFERENCE],
                          cfg[DR_T_LEARNED], cfg[DR_T_LEARNING]};
    int descrs_ok = 1;
    for (size_t k = 0; k < sizeof descrs / sizeof descrs[0]; k++)
        descrs_ok &= Py_TYPE(descrs[k])->tp_descr_get != NULL &&
                     Py_TYPE(descrs[k])->tp_descr_set != NULL;
    if (o_signal < 0 || o_unknown < 0 || o_raw < 0 || o_tenant < 0 || o_type < 0 || o_ts < 0 ||
        o_value < 0 || o_headers < 0 || o_entries < 0 || o_values < 0 || o_extended < 0 ||
        o_deadline < 0 || !PyType_Check(cfg[DR_TYPESTATE]) ||
        !descrs_ok || !PyType_Check(cfg[DR_ENTRY]) || !PyType_Check(cfg[DR_BATCH]) ||
        !PyUnicode_CheckExact(cfg[DR_CANARY])) {
        PyErr_SetString(PyExc_TypeError, "drift_run: config is not operators.drift's");
        return NULL;
    }
    PyTypeObject *entry_cls = (PyTypeObject *)cfg[DR_ENTRY], *batch_cls = (PyTypeObject *)cfg[DR_BATCH];
    Py_ssize_t n = PyList_GET_SIZE(items);
    Py_ssize_t batch_size = drift_run_size(attrs, s_dr_batch_size),
               min_batch = drift_run_size(attrs, s_dr_min_batch),
               min_share = drift_run_size(attrs, s_dr_min_share);
    PyObject *tenant = PyDict_GetItemWithError(attrs, s_dr_tenant),
             *open_ = PyDict_GetItemWithError(attrs, s_dr_open),
             *fifo = PyDict_GetItemWithError(attrs, s_dr_fifo),
             *types = PyDict_GetItemWithError(attrs, s_dr_types),
             *batch_seconds = PyDict_GetItemWithError(attrs, s_dr_batch_seconds);
    if (PyErr_Occurred())
        return NULL;
    if (start >= n || batch_size < 0 || min_batch < 0 || min_share < 0 || tenant == NULL ||
        !PyUnicode_CheckExact(tenant) || open_ == NULL || !PyDict_CheckExact(open_) ||
        fifo == NULL || types == NULL || !PyDict_CheckExact(types) || batch_seconds == NULL)
        return PyLong_FromSsize_t(start); /* not a state this loop knows: the Python loop */
    PyObject *append = NULL, *popleft = NULL;
    /* held for the call: the callbacks change these objects in place, never the attributes */
    Py_INCREF(tenant);
    Py_INCREF(open_);
    Py_INCREF(fifo);
    Py_INCREF(types);
    Py_INCREF(batch_seconds);
    Py_ssize_t i = start;
    PyObject *result = NULL;
    if ((append = PyObject_GetAttr(fifo, s_dr_append)) == NULL ||
        (popleft = PyObject_GetAttr(fifo, s_dr_popleft)) == NULL)
        goto fail;
    for (; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (Py_TYPE(item) != (PyTypeObject *)decoded_cls)
            break;
        PyObject *signal = SLOT(item, o_signal), *unknown = SLOT(item, o_unknown),
                 *raw = SLOT(item, o_raw);
        if (signal == NULL || unknown == NULL || raw == NULL ||
            Py_TYPE(signal) != (PyTypeObject *)signal_cls)
            break;
        PyObject *kind = SLOT(signal, o_type), *tenant_id = SLOT(signal, o_tenant),
                 *ts = SLOT(signal, o_ts), *value = SLOT(signal, o_value);
        if (kind == NULL || tenant_id == NULL || ts == NULL || value == NULL ||
            !PyUnicode_CheckExact(kind) || !PyUnicode_CheckExact(tenant_id))
            break;
        /* item.unknown_fields or kind == CANARY_TYPE or signal.tenant_id != tenant */
        int unusual = unknown == Py_None ? 0 : PyObject_IsTrue(unknown);
        if (unusual != 0 || PyUnicode_Compare(kind, cfg[DR_CANARY]) == 0 ||
            PyUnicode_Compare(tenant_id, tenant) != 0) {
            PyErr_Clear();
            break;
        }
        if (checks_markers && raw != Py_None) { /* ... or (raw is not None and raw.headers) */
            if (Py_TYPE(raw) != (PyTypeObject *)cfg[DR_RAW] || SLOT(raw, o_headers) == NULL)
                break;
            int headers = PyObject_IsTrue(SLOT(raw, o_headers));
            if (headers != 0) {
                PyErr_Clear();
                break;
            }
        }
        PyObject *open_batch = PyDict_GetItemWithError(open_, kind);
        if (open_batch == NULL ? PyErr_Occurred() != NULL
                               : Py_TYPE(open_batch) != batch_cls ||
                                     SLOT(open_batch, o_entries) == NULL ||
                                     !PyList_CheckExact(SLOT(open_batch, o_entries)) ||
                                     SLOT(open_batch, o_values) == NULL) {
            PyErr_Clear();
            break; /* an open batch this loop does not know (a closing one only goes away) */
        }
        PyObject *event_time = PyDict_GetItemWithError(attrs, s_dr_event_time);
        if (event_time == NULL) {
            PyErr_Clear();
            break; /* no attribute: the loop raises its AttributeError */
        }
        int later = event_time == Py_None ? 1 : PyObject_RichCompareBool(ts, event_time, Py_GT);
        if (later < 0) {
            PyErr_Clear();
            break; /* the loop raises the comparison's error, nothing changed yet */
        }
        /* from here on the record is under way: an error propagates */
        Py_INCREF(ts);
        Py_INCREF(event_time);
        int closed = 0;
        PyObject *batch = NULL, *entry = NULL;
        if (later) {
            Py_SETREF(event_time, Py_NewRef(ts));
            if (PyDict_SetItem(attrs, s_dr_event_time, ts) < 0)
                goto record_fail;
            PyObject *next_deadline = PyDict_GetItemWithError(attrs, s_dr_next_deadline);
            if (next_deadline == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_AttributeError, s_dr_next_deadline);
                goto record_fail;
            }
            if (next_deadline != Py_None) {
                int due = PyObject_RichCompareBool(ts, next_deadline, Py_GE);
                if (due < 0)
                    goto record_fail;
                if (due) {
                    closed = 1;
                    int learnt = drift_learn_close(attrs, open_, types, ts, cfg, o_entries,
                                                   o_values, o_deadline);
                    if (learnt == 0)
                        learnt = drift_extend(attrs, open_, types, ts, cfg, o_entries,
                                              o_deadline, o_extended, min_batch, min_share);
                    if (learnt < 0)
                        goto record_fail;
                    if (learnt == 0) {
                        PyObject *r = PyObject_CallMethodOneArg(self, s_dr_expire, ts);
                        if (r == NULL)
                            goto record_fail;
                        Py_DECREF(r);
                    }
                }
            }
        }
        entry = entry_cls->tp_alloc(entry_cls, 0);
        if (entry == NULL || drift_run_set(cfg[DR_E_ITEM], entry, item) < 0 ||
            drift_run_set(cfg[DR_E_OUT], entry, Py_None) < 0)
            goto record_fail;
        {
            PyObject *r = PyObject_CallOneArg(append, entry);
            if (r == NULL)
                goto record_fail;
            Py_DECREF(r);
        }
        batch = PyDict_GetItemWithError(open_, kind);
        if (batch == NULL && PyErr_Occurred())
            goto record_fail;
        Py_XINCREF(batch);
        int close = 0;
        if (batch == NULL) {
            PyObject *deadline = PyNumber_Add(ts, batch_seconds);
            if (deadline == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                    goto record_fail;
                PyErr_Clear(); /* a batch_seconds of centuries: no time limit */
                deadline = Py_NewRef(cfg[DR_END_OF_TIME]);
            }
            batch = batch_cls->tp_alloc(batch_cls, 0);
            PyObject *entries = PyList_New(0), *values = PyList_New(0);
            int err = batch == NULL || entries == NULL || values == NULL ||
                      drift_run_set(cfg[DR_B_TYPE], batch, kind) < 0 ||
                      drift_run_set(cfg[DR_B_ID], batch, Py_None) < 0 ||
                      drift_run_set(cfg[DR_B_DEADLINE], batch, deadline) < 0 ||
                      drift_run_set(cfg[DR_B_ENTRIES], batch, entries) < 0 ||
                      drift_run_set(cfg[DR_B_VALUES], batch, values) < 0 ||
                      drift_run_set(cfg[DR_B_EXTENDED], batch, Py_False) < 0 ||
                      PyDict_SetItem(open_, kind, batch) < 0;
            Py_XDECREF(entries);
            Py_XDECREF(values);
            if (err) {
                Py_DECREF(deadline);
                goto record_fail;
            }
            PyObject *next_deadline = PyDict_GetItemWithError(attrs, s_dr_next_deadline);
            int earlier = 1;
            if (next_deadline == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_AttributeError, s_dr_next_deadline);
                earlier = -1;
            } else if (next_deadline != Py_None) {
                earlier = PyObject_RichCompareBool(deadline, next_deadline, Py_LT);
            }
            if (earlier < 0 ||
                (earlier && PyDict_SetItem(attrs, s_dr_next_deadline, deadline) < 0)) {
                Py_DECREF(deadline);
                goto record_fail;
            }
            if (PyList_Append(SLOT(batch, o_entries), entry) < 0 ||
                PyList_Append(SLOT(batch, o_values), value) < 0) {
                Py_DECREF(deadline);
                goto record_fail;
            }
            if (batch_size <= 1) {
                close = 1;
            } else {
                int late = PyObject_RichCompareBool(deadline, event_time, Py_LE);
                if (late > 0) { /* a late record: see _push */
                    PyObject *r = PyObject_CallMethodObjArgs(self, s_dr_late, kind, batch,
                                                             event_time, NULL);
                    if (r == NULL)
                        late = -1;
                    Py_XDECREF(r);
                }
                if (late < 0) {
                    Py_DECREF(deadline);
                    goto record_fail;
                }
            }
            Py_DECREF(deadline);
        } else {
            if (Py_TYPE(batch) != batch_cls) {
                /* entries and values through attributes: a batch of another class */
                PyErr_SetString(PyExc_TypeError, "drift_run: an open batch of another class");
                goto record_fail;
            }
            PyObject *entries = SLOT(batch, o_entries), *values = SLOT(batch, o_values);
            if (entries == NULL || values == NULL || !PyList_CheckExact(entries)) {
                PyErr_SetString(PyExc_TypeError, "drift_run: a batch without its lists");
                goto record_fail;
            }
            if (PyList_Append(entries, entry) < 0)
                goto record_fail;
            if (PyList_CheckExact(values)) {
                if (PyList_Append(values, value) < 0)
                    goto record_fail;
            } else {
                PyObject *r = PyObject_CallMethodOneArg(values, s_dr_append, value);
                if (r == NULL)
                    goto record_fail;
                Py_DECREF(r);
            }
            Py_ssize_t size = PyList_GET_SIZE(entries);
            if (size >= batch_size) {
                close = 1;
            } else {
                PyObject *extended = SLOT(batch, o_extended); /* getattr(batch, "extended", False) */
                int ext = extended == NULL ? 0 : PyObject_IsTrue(extended);
                if (ext < 0)
                    goto record_fail;
                if (ext) {
                    if (size >= min_batch) {
                        close = 1;
                    } else if (size >= min_share) {
                        PyObject *state = PyDict_GetItemWithError(types, kind);
                        if (state == NULL && PyErr_Occurred())
                            goto record_fail;
                        if (state != NULL) { /* size + _window_size(state) >= min_batch */
                            PyObject *window = drift_run_get(cfg[DR_T_WINDOW], state,
                                                             cfg[DR_TYPESTATE]);
                            Py_ssize_t pooled =
                                window == NULL ? -1 : drift_window_held(window, size);
                            Py_XDECREF(window);
                            if (pooled < 0)
                                goto record_fail;
                            close = pooled >= min_batch;
                        }
                    }
                }
                if (!close && !closed) {
                    Py_DECREF(batch);
                    Py_DECREF(entry);
                    Py_DECREF(ts);
                    Py_DECREF(event_time);
                    continue; /* the oldest held record's batch is still open: nothing out */
                }
            }
        }
        if (close) {
            int done = drift_close_passed(attrs, open_, types, kind, batch, cfg, o_entries,
                                          o_values, o_deadline, min_batch, min_share);
            if (done < 0)
                goto record_fail;
            if (done == 0) {
                PyObject *r = PyObject_CallMethodObjArgs(self, s_dr_close, kind, batch, NULL);
                if (r == NULL)
                    goto record_fail;
                Py_DECREF(r);
            }
        }
        Py_CLEAR(batch);
        Py_CLEAR(entry);
        { /* _release, inline */
            PyObject *head = drift_run_head(fifo, cfg[DR_E_OUT], cfg[DR_ENTRY]);
            if (head == NULL)
                goto record_fail;
            if (head != Py_None) {
                Py_ssize_t last = 0;
                PyObject *passed = NULL;
                for (;;) {
                    if (Py_TYPE(head) == (PyTypeObject *)decoded_cls) {
                        last = PyList_GET_SIZE(out);
                        Py_XSETREF(passed, Py_NewRef(head));
                    }
                    int err = PyList_Append(out, head);
                    Py_DECREF(head);
                    head = NULL;
                    PyObject *r = err < 0 ? NULL : PyObject_CallNoArgs(popleft);
                    if (r == NULL) {
                        Py_XDECREF(passed);
                        goto record_fail;
                    }
                    Py_DECREF(r);
                    Py_ssize_t left = PyObject_Size(fifo);
                    if (left < 0) {
                        Py_XDECREF(passed);
                        goto record_fail;
                    }
                    if (left == 0)
                        break;
                    head = drift_run_head(fifo, cfg[DR_E_OUT], cfg[DR_ENTRY]);
                    if (head == NULL) {
                        Py_XDECREF(passed);
                        goto record_fail;
                    }
                    if (head == Py_None)
                        break;
                }
                Py_XDECREF(head);
                head = NULL;
                if (passed != NULL) {
                    PyObject *hargs[4] = {passed, event_time, decoded_cls, cfg[DR_DECODED_SLOTS]};
                    PyObject *copy = with_horizon(mod, hargs, 4);
                    Py_DECREF(passed);
                    if (copy == NULL || PyList_SetItem(out, last, copy) < 0)
                        goto record_fail;
                }
            }
            Py_XDECREF(head);
        }
        Py_DECREF(ts);
        Py_DECREF(event_time);
        continue;
    record_fail:
        Py_XDECREF(batch);
        Py_XDECREF(entry);
        Py_DECREF(ts);
        Py_DECREF(event_time);
        goto fail;
    }
    result = PyLong_FromSsize_t(i);
fail:
    Py_XDECREF(append);
    Py_XDECREF(popleft);
    Py_DECREF(tenant);
    Py_DECREF(open_);
    Py_DECREF(fifo);
    Py_DECREF(types);
    Py_DECREF(batch_seconds);
    return result;
}
/* === end of drift run ===================================================================== */
/* === exchange: a run's pickled form between processes (core.records.Records.__reduce__) ===== */

/* A run of records (every item of a class of the table exchange_init registered) written into
 * one bytes object and built again from it, for what Bytewax pickles between the processes of
 * a cluster. The encoder reads the slots at their offsets; the decoder allocates each record
 * and stores its slots (what slot_maker's twin does), no __init__. Only exact types are taken:
 * None, str (UTF-8), int (64 bits), float (its 8 bytes), bool, bytes, tuple, datetime (naive or
 * in the registered UTC), records of the table; anything else (an enum, a Decimal, a str or int
 * subclass, an int beyond 64 bits, a surrogate, a slot never set) makes exchange_pack return
 * None and the run pickles as columns. A str equal to the same field of the previous record of
 * its class is written as a back reference and loaded as that very object (pickle's memo shares
 * identical objects the same way). The bytes start with the table's 8-byte fingerprint: a
 * process with another table refuses them. */

#define EX_MAX_CLASSES 32
#define EX_MAX_FIELDS 32
#define EX_MAX_DEPTH 8

enum {
    EX_NONE = 0, EX_STR, EX_INT, EX_FLOAT, EX_BYTES, EX_TUPLE, EX_RECORD, EX_DATETIME, EX_TRUE,
    EX_FALSE, EX_SAME,
};

typedef struct {
    PyTypeObject *cls;
    int n;
    Py_ssize_t off[EX_MAX_FIELDS];
} ExClass;

static ExClass ex_classes[EX_MAX_CLASSES];
static int ex_count = -1; /* -1: exchange_init not called */
static PyObject *ex_utc;  /* strong */
static unsigned char ex_tag[8];

typedef struct {
    char *buf;
    size_t len, cap;
    const PyObject *prev[EX_MAX_CLASSES]; /* the previous record of each class (borrowed) */
} ExOut;

/* 1 when the value cannot be taken (no exception set), -1 on an error (exception set). */
#define EX_CANNOT 1

static int
ex_reserve(ExOut *o, size_t n)
{
    if (o->len + n <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + n)
        cap *= 2;
    char *buf = PyMem_Realloc(o->buf, cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = buf;
    o->cap = cap;
    return 0;
}

static int
ex_put(ExOut *o, const void *data, size_t n)
{
    if (ex_reserve(o, n) < 0)
        return -1;
    memcpy(o->buf + o->len, data, n);
    o->len += n;
    return 0;
}

static int
ex_byte(ExOut *o, unsigned char b)
{
    return ex_put(o, &b, 1);
}

static int
ex_size(ExOut *o, Py_ssize_t n)
{
    if (n < 0 || n > 0x7fffffff)
        return EX_CANNOT;
    uint32_t v = (uint32_t)n;
    return ex_put(o, &v, 4);
}

static int ex_record(ExOut *o, PyObject *rec, int c, int depth);

static int
ex_class_of(PyObject *v)
{
    for (int c = 0; c < ex_count; c++)
        if (Py_TYPE(v) == ex_classes[c].cls)
            return c;
    return -1;
}

static int
ex_value(ExOut *o, PyObject *v, PyObject *prev, int depth)
{
    int err;
    if (v == Py_None)
        return ex_byte(o, EX_NONE);
    if (PyUnicode_CheckExact(v)) {
        if (prev != NULL && PyUnicode_CheckExact(prev) &&
            (prev == v || PyUnicode_Compare(prev, v) == 0))
            return ex_byte(o, EX_SAME);
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
                return -1;
            PyErr_Clear(); /* a lone surrogate: pickle's job */
            return EX_CANNOT;
        }
        if ((err = ex_byte(o, EX_STR)) != 0 || (err = ex_size(o, n)) != 0)
            return err;
        return ex_put(o, s, (size_t)n);
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (overflow)
            return EX_CANNOT;
        int64_t x64 = (int64_t)x;
        if ((err = ex_byte(o, EX_INT)) != 0)
            return err;
        return ex_put(o, &x64, 8);
    }
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        if ((err = ex_byte(o, EX_FLOAT)) != 0)
            return err;
        return ex_put(o, &d, 8);
    }
    if (v == Py_True)
        return ex_byte(o, EX_TRUE);
    if (v == Py_False)
        return ex_byte(o, EX_FALSE);
    if (PyBytes_CheckExact(v)) {
        if ((err = ex_byte(o, EX_BYTES)) != 0 || (err = ex_size(o, PyBytes_GET_SIZE(v))) != 0)
            return err;
        return ex_put(o, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
    }
    if (PyTuple_CheckExact(v)) {
        if (depth >= EX_MAX_DEPTH)
            return EX_CANNOT;
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        if ((err = ex_byte(o, EX_TUPLE)) != 0 || (err = ex_size(o, n)) != 0)
            return err;
        for (Py_ssize_t i = 0; i < n; i++)
            if ((err = ex_value(o, PyTuple_GET_ITEM(v, i), NULL, depth + 1)) != 0)
                return err;
        return 0;
    }
    if (PyDateTime_CheckExact(v)) {
        PyObject *tz = PyDateTime_DATE_GET_TZINFO(v);
        if (tz != Py_None && tz != ex_utc)
            return EX_CANNOT;
        unsigned char d[12];
        int year = PyDateTime_GET_YEAR(v), us = PyDateTime_DATE_GET_MICROSECOND(v);
        d[0] = (unsigned char)(year & 0xff);
        d[1] = (unsigned char)(year >> 8);
        d[2] = (unsigned char)PyDateTime_GET_MONTH(v);
        d[3] = (unsigned char)PyDateTime_GET_DAY(v);
        d[4] = (unsigned char)PyDateTime_DATE_GET_HOUR(v);
        d[5] = (unsigned char)PyDateTime_DATE_GET_MINUTE(v);
        d[6] = (unsigned char)PyDateTime_DATE_GET_SECOND(v);
        d[7] = (unsigned char)(us & 0xff);
        d[8] = (unsigned char)((us >> 8) & 0xff);
        d[9] = (unsigned char)(us >> 16);
        d[10] = (unsigned char)PyDateTime_DATE_GET_FOLD(v);
        d[11] = tz == Py_None ? 0 : 1;
        if ((err = ex_byte(o, EX_DATETIME)) != 0)
            return err;
        return ex_put(o, d, 12);
    }
    int c = ex_class_of(v);
    if (c >= 0) {
        if (depth >= EX_MAX_DEPTH)
            return EX_CANNOT;
        if ((err = ex_byte(o, EX_RECORD)) != 0)
            return err;
        return ex_record(o, v, c, depth + 1);
    }
    return EX_CANNOT;
}

/* The record's class number, then each field (a str equal to the same field of the previous
 * record of the class as EX_SAME). */
static int
ex_record(ExOut *o, PyObject *rec, int c, int depth)
{
    const ExClass *k = &ex_classes[c];
    const PyObject *prev = o->prev[c];
    int err;
    if ((err = ex_byte(o, (unsigned char)c)) != 0)
        return err;
    for (int i = 0; i < k->n; i++) {
        PyObject *v = SLOT(rec, k->off[i]);
        if (v == NULL)
            return EX_CANNOT;
        if ((err = ex_value(o, v, prev ? SLOT(prev, k->off[i]) : NULL, depth)) != 0)
            return err;
    }
    o->prev[c] = rec;
    return 0;
}

static int
ex_ready(void)
{
    if (ex_count < 0) {
        PyErr_SetString(PyExc_RuntimeError, "exchange: exchange_init was not called");
        return -1;
    }
    return 0;
}

/* exchange_init(table, utc, fingerprint): table is a tuple of (class, its slot descriptors in
 * field order); the fingerprint (8 bytes) heads every run written and must head every run
 * read. */
static PyObject *
exchange_init(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[0]) || !PyBytes_Check(args[2]) ||
        PyBytes_GET_SIZE(args[2]) != 8) {
        PyErr_SetString(PyExc_TypeError, "exchange_init(table, utc, fingerprint: 8 bytes)");
        return NULL;
    }
    PyObject *table = args[0];
    Py_ssize_t n = PyTuple_GET_SIZE(table);
    if (n > EX_MAX_CLASSES) {
        PyErr_SetString(PyExc_ValueError, "exchange_init: too many classes");
        return NULL;
    }
    ExClass classes[EX_MAX_CLASSES];
    for (Py_ssize_t c = 0; c < n; c++) {
        PyObject *entry = PyTuple_GET_ITEM(table, c);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 ||
            !PyType_Check(PyTuple_GET_ITEM(entry, 0)) ||
            !PyTuple_Check(PyTuple_GET_ITEM(entry, 1)) ||
            PyTuple_GET_SIZE(PyTuple_GET_ITEM(entry, 1)) > EX_MAX_FIELDS) {
            PyErr_SetString(PyExc_TypeError, "exchange_init: entries are (class, slots)");
            return NULL;
        }
        PyTypeObject *cls = (PyTypeObject *)PyTuple_GET_ITEM(entry, 0);
        PyObject *slots = PyTuple_GET_ITEM(entry, 1);
        classes[c].cls = cls;
        classes[c].n = (int)PyTuple_GET_SIZE(slots);
        for (int i = 0; i < classes[c].n; i++) {
            PyTypeObject *owner;
            Py_ssize_t off = slot_offset(PyTuple_GET_ITEM(slots, i), &owner);
            if (off < 0)
                return NULL;
            if (owner != cls) {
                PyErr_SetString(PyExc_TypeError, "exchange_init: a slot of another class");
                return NULL;
            }
            classes[c].off[i] = off;
        }
    }
    for (Py_ssize_t c = 0; c < n; c++)
        Py_INCREF(classes[c].cls); /* kept for the life of the process */
    for (int c = 0; c < ex_count; c++)
        Py_DECREF(ex_classes[c].cls);
    memcpy(ex_classes, classes, sizeof(ExClass) * (size_t)n);
    ex_count = (int)n;
    Py_XSETREF(ex_utc, Py_NewRef(args[1]));
    memcpy(ex_tag, PyBytes_AS_STRING(args[2]), 8);
    Py_RETURN_NONE;
}

/* exchange_pack(run) -> bytes, or None when an item or a value is not one it takes. */
static PyObject *
exchange_pack(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "exchange_pack(run: list)");
        return NULL;
    }
    if (ex_ready() < 0)
        return NULL;
    PyObject *run = args[0];
    ExOut o;
    memset(&o, 0, sizeof o);
    int err = ex_put(&o, ex_tag, 8);
    if (err == 0)
        err = ex_size(&o, PyList_GET_SIZE(run));
    for (Py_ssize_t i = 0; err == 0 && i < PyList_GET_SIZE(run); i++) {
        PyObject *item = PyList_GET_ITEM(run, i);
        int c = ex_class_of(item);
        err = c < 0 ? EX_CANNOT : ex_record(&o, item, c, 1);
    }
    PyObject *out = NULL;
    if (err == 0)
        out = PyBytes_FromStringAndSize(o.buf, (Py_ssize_t)o.len);
    else if (err == EX_CANNOT)
        out = Py_NewRef(Py_None);
    PyMem_Free(o.buf);
    return out;
}

typedef struct {
    const unsigned char *p, *end;
    PyObject *prev[EX_MAX_CLASSES]; /* the previous record built of each class (borrowed) */
} ExIn;

static int
ex_truncated(void)
{
    PyErr_SetString(PyExc_ValueError, "exchange: a truncated or malformed run");
    return -1;
}

static int
ex_take(ExIn *in, void *out, size_t n)
{
    if ((size_t)(in->end - in->p) < n)
        return ex_truncated();
    memcpy(out, in->p, n);
    in->p += n;
    return 0;
}

static PyObject *ex_read_record(ExIn *in, int depth);

/* The next value; prev is the same field of the previous record of its class (EX_SAME). */
static PyObject *
ex_read(ExIn *in, PyObject *prev, int depth)
{
    unsigned char kind;
    uint32_t n;
    if (ex_take(in, &kind, 1) < 0)
        return NULL;
    switch (kind) {
    case EX_NONE:
        Py_RETURN_NONE;
    case EX_TRUE:
        Py_RETURN_TRUE;
    case EX_FALSE:
        Py_RETURN_FALSE;
    case EX_SAME:
        if (prev == NULL) {
            ex_truncated();
            return NULL;
        }
        return Py_NewRef(prev);
    case EX_STR:
    case EX_BYTES: {
        if (ex_take(in, &n, 4) < 0)
            return NULL;
        if ((size_t)(in->end - in->p) < n) {
            ex_truncated();
            return NULL;
        }
        const char *s = (const char *)in->p;
        in->p += n;
        if (kind == EX_STR)
            return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "strict");
        return PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
    }
    case EX_INT: {
        int64_t x;
        if (ex_take(in, &x, 8) < 0)
            return NULL;
        return PyLong_FromLongLong((long long)x);
    }
    case EX_FLOAT: {
        double d;
        if (ex_take(in, &d, 8) < 0)
            return NULL;
        return PyFloat_FromDouble(d);
    }
    case EX_TUPLE: {
        if (depth >= EX_MAX_DEPTH || ex_take(in, &n, 4) < 0) {
            if (!PyErr_Occurred())
                ex_truncated();
            return NULL;
        }
        if ((size_t)(in->end - in->p) < n) { /* each item takes a byte at least */
            ex_truncated();
            return NULL;
        }
        PyObject *t = PyTuple_New((Py_ssize_t)n);
        if (t == NULL)
            return NULL;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *v = ex_read(in, NULL, depth + 1);
            if (v == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i, v);
        }
        return t;
    }
    case EX_DATETIME: {
        unsigned char d[12];
        if (ex_take(in, d, 12) < 0)
            return NULL;
        if (d[10] > 1 || d[11] > 1) {
            ex_truncated();
            return NULL;
        }
        return PyDateTimeAPI->DateTime_FromDateAndTimeAndFold(
            d[0] | (d[1] << 8), d[2], d[3], d[4], d[5], d[6], d[7] | (d[8] << 8) | (d[9] << 16),
            d[11] ? ex_utc : Py_None, d[10], PyDateTimeAPI->DateTimeType);
    }
    case EX_RECORD:
        if (depth >= EX_MAX_DEPTH) {
            ex_truncated();
            return NULL;
        }
        return ex_read_record(in, depth + 1);
    default:
        ex_truncated();
        return NULL;
    }
}

static PyObject *
ex_read_record(ExIn *in, int depth)
{
    unsigned char c;
    if (ex_take(in, &c, 1) < 0)
        return NULL;
    if (c >= ex_count) {
        ex_truncated();
        return NULL;
    }
    const ExClass *k = &ex_classes[c];
    PyObject *prev = in->prev[c];
    PyObject *obj = k->cls->tp_alloc(k->cls, 0);
    if (obj == NULL)
        return NULL;
    for (int i = 0; i < k->n; i++) {
        PyObject *v = ex_read(in, prev ? SLOT(prev, k->off[i]) : NULL, depth);
        if (v == NULL) {
            Py_DECREF(obj);
            return NULL;
        }
        SLOT(obj, k->off[i]) = v;
    }
    untracked(obj); /* a core.records record, as build's */
    in->prev[c] = obj;
    return obj;
}

/* exchange_unpack(data) -> list: the records exchange_pack wrote, in order. */
static PyObject *
exchange_unpack(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "exchange_unpack(data: bytes)");
        return NULL;
    }
    if (ex_ready() < 0)
        return NULL;
    ExIn in;
    memset(&in, 0, sizeof in);
    in.p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    in.end = in.p + PyBytes_GET_SIZE(args[0]);
    if (in.end - in.p < 8 || memcmp(in.p, ex_tag, 8) != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "exchange: a run from a process whose record classes differ from this "
                        "one's (every process of a cluster must run the same code)");
        return NULL;
    }
    in.p += 8;
    uint32_t n;
    if (ex_take(&in, &n, 4) < 0)
        return NULL;
    if ((size_t)(in.end - in.p) < n) {
        ex_truncated();
        return NULL;
    }
    PyObject *run = PyList_New((Py_ssize_t)n);
    if (run == NULL)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *rec = ex_read_record(&in, 1);
        if (rec == NULL) {
            Py_DECREF(run);
            return NULL;
        }
        PyList_SET_ITEM(run, i, rec);
    }
    if (in.p != in.end) {
        Py_DECREF(run);
        ex_truncated();
        return NULL;
    }
    return run;
}

/* === end of exchange ====================================================================== */

/* === split: one kind of a batch's items (operators/split.py) ============================== */

/* kind_of(items, cls, want) -> list: the items of the list ``items`` that are (``want`` true) or
 * are not instances of ``cls``, in order, in a new list: operators.split's list comprehensions
 * (``isinstance``) in one C loop. ``cls`` must be a class whose metaclass is exactly ``type``
 * (no ``__instancecheck__`` of its own), where ``PyObject_TypeCheck`` is ``isinstance``. */
static PyObject *
kind_of(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[0]) || !PyType_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "kind_of(items: list, cls: a plain class, want)");
        return NULL;
    }
    PyObject *items = args[0];
    PyTypeObject *cls = (PyTypeObject *)args[1];
    int want = PyObject_IsTrue(args[2]);
    if (want < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items), count = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        count += (PyObject_TypeCheck(PyList_GET_ITEM(items, i), cls) != 0) == want;
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0, j = 0; i < n && j < count; i++) {
        PyObject *x = PyList_GET_ITEM(items, i);
        if ((PyObject_TypeCheck(x, cls) != 0) == want)
            PyList_SET_ITEM(out, j++, Py_NewRef(x));
    }
    return out;
}

/* === replay plan: placing rows in their planned commits (sinks/lake_plan.py) ============== */

/* plan_place(values, provs, lanes, marks_of, index_of, pending, closed, unplanned, nxt) -> None
 *
 * _PlannedBatches._place's loop over a call's rows, the same operations on the same objects
 * in the same order (its reference _place_python, which commit_of decides row by row):
 * provs[i] and lanes[i] are values[i]'s provenance and lane (the table's getters, mapped by the
 * caller). Per row, its lane (topic, kafka_partition, lane) is looked up in marks_of (and
 * index_of) only where it differs from the row before's; its commit is the first mark at or
 * past its offset (bisect_left, from the previous row's mark first: a lane's offsets rise);
 * the row goes to pending[commit] (a new list where absent), or to unplanned (a lane the plan
 * lacks, past its last mark, or a commit before nxt); a row at its mark counts in
 * closed[commit]. Comparisons are Python's (RichCompare), so any values compare as there. On an
 * error (a missing attribute, index_of without the lane), what was placed before it stays, as
 * in the Python loop. */
static PyObject *
plan_place(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[2]) ||
        !PyDict_Check(args[3]) || !PyDict_Check(args[4]) || !PyDict_Check(args[5]) ||
        !PyDict_Check(args[6]) || !PyList_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError,
                        "plan_place(values, provs, lanes: lists, marks_of, index_of, pending, "
                        "closed: dicts, unplanned: list, nxt)");
        return NULL;
    }
    PyObject *values = args[0], *provs = args[1], *lanes = args[2], *marks_of = args[3],
             *index_of = args[4], *pending = args[5], *closed = args[6], *unplanned = args[7],
             *nxt = args[8];
    Py_ssize_t n = PyList_GET_SIZE(values);
    if (PyList_GET_SIZE(provs) != n || PyList_GET_SIZE(lanes) != n) {
        PyErr_SetString(PyExc_ValueError, "plan_place: values, provs and lanes of one length");
        return NULL;
    }
    /* the loop's locals: owned */
    PyObject *key = NULL, *marks = NULL, *index = NULL;
    PyObject *rows = PyList_New(0), *held = PyLong_FromLong(-1); /* as the Python loop starts */
    PyObject *topic = NULL, *partition = NULL, *offset = NULL, *one = PyLong_FromLong(1);
    Py_ssize_t j = 0; /* the previous row's mark in marks */
    int failed = one == NULL || rows == NULL || held == NULL;
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        failed = 1;
        PyObject *item = PyList_GET_ITEM(values, i), *p = PyList_GET_ITEM(provs, i);
        PyObject *lane = PyList_GET_ITEM(lanes, i);
        Py_INCREF(item);
        Py_INCREF(p);
        Py_INCREF(lane);
        if ((topic = PyObject_GetAttr(p, s_topic)) == NULL ||
            (partition = PyObject_GetAttr(p, s_kafka_partition)) == NULL)
            goto next;
        /* lane != key: a tuple compared item by item (== first: identity, then __eq__) */
        int same = key != NULL;
        PyObject *parts[3] = {topic, partition, lane};
        for (int k = 0; k < 3 && same; k++) {
            same = PyObject_RichCompareBool(PyTuple_GET_ITEM(key, k), parts[k], Py_EQ);
            if (same < 0)
                goto next;
        }
        if (!same) {
            PyObject *fresh = PyTuple_Pack(3, topic, partition, lane);
            if (fresh == NULL)
                goto next;
            Py_XSETREF(key, fresh);
            PyObject *got = PyDict_GetItemWithError(marks_of, key);
            if (got == NULL && PyErr_Occurred())
                goto next;
            Py_XSETREF(marks, Py_XNewRef(got));
            if (marks != NULL) {
                PyObject *at_index = PyDict_GetItemWithError(index_of, key);
                if (at_index == NULL) {
                    if (!PyErr_Occurred()) { /* KeyError(key), as index_of[key] raises it */
                        PyObject *exc_args = PyTuple_Pack(1, key);
                        if (exc_args != NULL)
                            PyErr_SetObject(PyExc_KeyError, exc_args);
                        Py_XDECREF(exc_args);
                    }
                    goto next;
                }
                Py_XSETREF(index, Py_NewRef(at_index));
            }
            j = 0;
        }
        if (marks == NULL) {
            failed = PyList_Append(unplanned, item) < 0; /* a lane the plan lacks */
            goto next;
        }
        if (!PyList_Check(marks)) {
            PyErr_SetString(PyExc_TypeError, "plan_place: a lane's marks must be a list");
            goto next;
        }
        if ((offset = PyObject_GetAttr(p, s_kafka_offset)) == NULL)
            goto next;
        /* bisect_left(marks, offset): the previous row's j where it still holds (marks[j - 1]
         * < offset <= marks[j]), else the whole search */
        Py_ssize_t size = PyList_GET_SIZE(marks), lo = 0, hi = size;
        int kept = 0;
        if (j < size) {
            int below = 1;
            if (j > 0) { /* (a reference of its own: a comparison may run Python code) */
                PyObject *m = Py_NewRef(PyList_GET_ITEM(marks, j - 1));
                below = PyObject_RichCompareBool(m, offset, Py_LT);
                Py_DECREF(m);
            }
            if (below < 0)
                goto next;
            if (below && j < PyList_GET_SIZE(marks)) {
                PyObject *m = Py_NewRef(PyList_GET_ITEM(marks, j));
                int past = PyObject_RichCompareBool(m, offset, Py_LT);
                Py_DECREF(m);
                if (past < 0)
                    goto next;
                kept = !past && PyList_GET_SIZE(marks) == size;
            }
        }
        if (!kept) {
            while (lo < hi) {
                Py_ssize_t mid = lo + (hi - lo) / 2;
                PyObject *m = Py_NewRef(PyList_GET_ITEM(marks, mid));
                int lt = PyObject_RichCompareBool(m, offset, Py_LT);
                Py_DECREF(m);
                if (lt < 0)
                    goto next;
                if (lt)
                    lo = mid + 1;
                else
                    hi = mid;
                if (PyList_GET_SIZE(marks) != size) {
                    PyErr_SetString(PyExc_RuntimeError, "plan_place: the marks changed");
                    goto next;
                }
            }
            j = lo;
        }
        if (j == size) {
            failed = PyList_Append(unplanned, item) < 0; /* past the lane's last mark */
            goto next;
        }
        PyObject *at = PySequence_GetItem(index, j);
        if (at == NULL)
            goto next;
        int early = PyObject_RichCompareBool(at, nxt, Py_LT);
        if (early != 0) {
            Py_DECREF(at);
            if (early > 0)
                failed = PyList_Append(unplanned, item) < 0;
            goto next;
        }
        int other = PyObject_RichCompareBool(at, held, Py_NE);
        if (other < 0) {
            Py_DECREF(at);
            goto next;
        }
        if (other) {
            PyObject *got = PyDict_GetItemWithError(pending, at);
            if (got == Py_None) /* pending.get(at) is None */
                got = NULL;
            if (got == NULL) {
                if (PyErr_Occurred() || (got = PyList_New(0)) == NULL ||
                    PyDict_SetItem(pending, at, got) < 0) {
                    Py_XDECREF(got);
                    Py_DECREF(at);
                    goto next;
                }
            } else {
                Py_INCREF(got);
            }
            Py_XSETREF(rows, got);
            Py_XSETREF(held, Py_NewRef(at));
        }
        if (!PyList_Check(rows) || PyList_Append(rows, item) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "plan_place: a pending commit must be a list");
            Py_DECREF(at);
            goto next;
        }
        if (j >= PyList_GET_SIZE(marks)) {
            PyErr_SetString(PyExc_RuntimeError, "plan_place: the marks changed");
            Py_DECREF(at);
            goto next;
        }
        PyObject *mark = Py_NewRef(PyList_GET_ITEM(marks, j));
        int at_mark = PyObject_RichCompareBool(mark, offset, Py_EQ);
        Py_DECREF(mark);
        if (at_mark > 0) {
            /* closed[at] = closed.get(at, 0) + 1 */
            PyObject *count = PyDict_GetItemWithError(closed, at);
            PyObject *more = count != NULL   ? PyNumber_Add(count, one)
                             : PyErr_Occurred() ? NULL
                                              : Py_NewRef(one);
            at_mark = more == NULL ? -1 : PyDict_SetItem(closed, at, more);
            Py_XDECREF(more);
        }
        Py_DECREF(at);
        failed = at_mark < 0;
    next:
        Py_CLEAR(topic);
        Py_CLEAR(partition);
        Py_CLEAR(offset);
        Py_DECREF(item);
        Py_DECREF(p);
        Py_DECREF(lane);
    }
    Py_XDECREF(key);
    Py_XDECREF(marks);
    Py_XDECREF(index);
    Py_XDECREF(rows);
    Py_XDECREF(held);
    Py_XDECREF(one);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* === end of replay plan =================================================================== */

/* === the serving sinks: Redis's operations (sinks/redis.py), the graph's rows (sinks/graph.py) */

/* What both loops read of a Tagged, in this order (core.records.TAGGED_READERS: their member
 * descriptors): Tagged's decoded, tags, policy_version and provenance_id, Decoded's signal and
 * provenance, Signal's tenant_id, signal_id, type, value, weight, source and ts, Provenance's
 * topic, kafka_partition, kafka_offset, schema_version and input_hash, PolicyTags' purpose,
 * retention, license and residency. */
enum { SV_DECODED, SV_TAGS, SV_POLICY, SV_PID, SV_SIGNAL, SV_PROVENANCE, SV_TENANT, SV_SID,
       SV_TYPE, SV_VALUE, SV_WEIGHT, SV_SOURCE, SV_TS, SV_TOPIC, SV_PARTITION, SV_OFFSET,
       SV_VERSION, SV_HASH, SV_PURPOSE, SV_RETENTION, SV_LICENSE, SV_RESIDENCY, SV_READERS };

/* The readers' offsets into o and their classes into cls (Tagged, Decoded, Signal, Provenance,
 * PolicyTags): 0, or -1 with a TypeError naming who. */
static int
sv_readers(PyObject *readers, Py_ssize_t *o, PyTypeObject **cls, const char *who)
{
    static const int first[5] = {SV_DECODED, SV_SIGNAL, SV_TENANT, SV_TOPIC, SV_PURPOSE};
    PyTypeObject *owners[SV_READERS];
    if (!PyTuple_Check(readers) || PyTuple_GET_SIZE(readers) != SV_READERS) {
        PyErr_Format(PyExc_TypeError, "%s: the readers of core.records.TAGGED_READERS", who);
        return -1;
    }
    for (int i = 0; i < SV_READERS; i++) {
        if ((o[i] = slot_offset(PyTuple_GET_ITEM(readers, i), &owners[i])) < 0)
            return -1;
    }
    for (int c = 0, i = 0; i < SV_READERS; i++) {
        if (c < 4 && i == first[c + 1])
            c++;
        cls[c] = owners[first[c]];
        if (owners[i] != cls[c]) {
            PyErr_Format(PyExc_TypeError, "%s: readers of five record classes", who);
            return -1;
        }
    }
    return 0;
}

/* item's fields into v (borrowed: the record holds them) when it and the records it holds are
 * of the readers' exact classes with every slot set: 1, else 0. */
static int
sv_fields(PyObject *item, const Py_ssize_t *o, PyTypeObject *const *cls, PyObject **v)
{
    if (Py_TYPE(item) != cls[0])
        return 0;
    for (int i = SV_DECODED; i <= SV_PID; i++) {
        if ((v[i] = SLOT(item, o[i])) == NULL)
            return 0;
    }
    if (Py_TYPE(v[SV_DECODED]) != cls[1] || Py_TYPE(v[SV_TAGS]) != cls[4] ||
        (v[SV_SIGNAL] = SLOT(v[SV_DECODED], o[SV_SIGNAL])) == NULL ||
        (v[SV_PROVENANCE] = SLOT(v[SV_DECODED], o[SV_PROVENANCE])) == NULL ||
        Py_TYPE(v[SV_SIGNAL]) != cls[2] || Py_TYPE(v[SV_PROVENANCE]) != cls[3])
        return 0;
    for (int i = SV_TENANT; i < SV_READERS; i++) {
        PyObject *owner = i <= SV_TS ? v[SV_SIGNAL] : i <= SV_HASH ? v[SV_PROVENANCE] : v[SV_TAGS];
        if ((v[i] = SLOT(owner, o[i])) == NULL)
            return 0;
    }
    return 1;
}

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} RsOut;

static int
rs_put(RsOut *o, const char *s, Py_ssize_t n)
{
    if (o->len + n > o->cap) {
        Py_ssize_t cap = o->cap ? o->cap : 4096;
        while (o->len + n > cap)
            cap *= 2;
        char *grown = PyMem_Realloc(o->data, (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->data = grown;
        o->cap = cap;
    }
    memcpy(o->data + o->len, s, (size_t)n);
    o->len += n;
    return 0;
}

#define RS_LIT(o, lit) rs_put((o), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* A plain str's text (json_plain: JSON writes it as itself between quotes), else NULL. */
static const char *
rs_plain(PyObject *text, Py_ssize_t *n)
{
    if (!PyUnicode_CheckExact(text) || !json_plain(text))
        return NULL;
    *n = PyUnicode_GET_LENGTH(text);
    return (const char *)PyUnicode_1BYTE_DATA(text);
}

/* '"' + text + '"', or with the quotes escaped ('\"'): the string inside the event's JSON,
 * itself a string of the operation's JSON. */
static int
rs_str(RsOut *o, const char *s, Py_ssize_t n, int nested)
{
    if (nested)
        return RS_LIT(o, "\\\"") || rs_put(o, s, n) || RS_LIT(o, "\\\"");
    return RS_LIT(o, "\"") || rs_put(o, s, n) || RS_LIT(o, "\"");
}

/* repr(x) of a finite double into buf (at least 32 bytes): its length. */
static Py_ssize_t
rs_repr(double x, char *buf)
{
    char *r = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL)
        return -1;
    size_t n = strlen(r);
    if (n >= 32) {
        PyMem_Free(r);
        PyErr_SetString(PyExc_ValueError, "redis_signals: a float's repr past 31 characters");
        return -1;
    }
    memcpy(buf, r, n);
    PyMem_Free(r);
    return (Py_ssize_t)n;
}

/* ts.isoformat() of an exact datetime whose tzinfo is UTC itself (what astimezone(UTC) then
 * leaves as it is) into buf (at least 32 bytes), with timespec="microseconds" when always_us:
 * its length. */
static Py_ssize_t
rs_iso(PyObject *ts, char *buf, int always_us)
{
    int fields[7] = {PyDateTime_GET_YEAR(ts),          PyDateTime_GET_MONTH(ts),
                     PyDateTime_GET_DAY(ts),           PyDateTime_DATE_GET_HOUR(ts),
                     PyDateTime_DATE_GET_MINUTE(ts),   PyDateTime_DATE_GET_SECOND(ts),
                     PyDateTime_DATE_GET_MICROSECOND(ts)};
    static const int widths[7] = {4, 2, 2, 2, 2, 2, 6};
    static const char after[5] = {'-', '-', 'T', ':', ':'};
    Py_ssize_t n = 0;
    for (int f = 0; f < 7; f++) {
        if (f == 6 && fields[6] == 0 && !always_us)
            break; /* isoformat writes microseconds only when there are some */
        if (f == 6)
            buf[n++] = '.';
        for (int w = widths[f] - 1, x = fields[f]; w >= 0; w--, x /= 10)
            buf[n + w] = (char)('0' + x % 10);
        n += widths[f];
        if (f < 5)
            buf[n++] = after[f];
    }
    memcpy(buf + n, "+00:00", 6);
    return n + 6;
}

/* known[key], else make(key) (which keeps it there for the next call): a new reference, or
 * NULL with an exception. */
static PyObject *
rs_known(PyObject *known, PyObject *make, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(known, key); /* borrowed */
    if (v != NULL)
        return Py_NewRef(v);
    return PyErr_Occurred() ? NULL : PyObject_CallOneArg(make, key);
}

/* redis_signals(items, at, readers, keys, new_keys, ttls, new_ttl, parts) -> the index of the
 * first item from at that it left (a record of another shape, a value JSON would write
 * otherwise than as itself, a float that is not finite, a time not in UTC: the caller's
 * reference, _Batch.signal, takes it), or len(items).
 *
 * The operation of each signal from at, as _Batch.signal builds it and json.dumps (compact)
 * writes it, joined by commas, appended to parts as one str. The tenant's (stream key index,
 * marks key index, channel) come from keys[tenant], made by new_keys(tenant) the first time
 * (which names the keys in the reference's order); a retention's TTL in ms from ttls, made by
 * new_ttl(retention). The records' fields are read at their slots' offsets (readers:
 * core.records.TAGGED_READERS, sv_fields). */
static PyObject *
redis_signals(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "redis_signals takes 8 arguments");
        return NULL;
    }
    PyObject *items = args[0], *readers = args[2], *keys = args[3], *new_keys = args[4],
             *ttls = args[5], *new_ttl = args[6], *parts = args[7];
    Py_ssize_t at = PyLong_AsSsize_t(args[1]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_Check(items) || !PyDict_Check(keys) || !PyDict_Check(ttls) ||
        !PyList_Check(parts) || at < 0) {
        PyErr_SetString(PyExc_TypeError,
                        "redis_signals: a list, an index, the readers, two dicts and a list");
        return NULL;
    }
    Py_ssize_t o[SV_READERS];
    PyTypeObject *cls[5];
    if (sv_readers(readers, o, cls, "redis_signals") < 0)
        return NULL;
    RsOut out = {NULL, 0, 0};
    Py_ssize_t n = at;
    for (; n < PyList_GET_SIZE(items); n++) {
        PyObject *item = PyList_GET_ITEM(items, n), *v[SV_READERS];
        if (!sv_fields(item, o, cls, v) || !PyFloat_CheckExact(v[SV_VALUE]) ||
            !(v[SV_WEIGHT] == Py_None || PyFloat_CheckExact(v[SV_WEIGHT])) ||
            !PyDateTime_CheckExact(v[SV_TS]) ||
            PyDateTime_DATE_GET_TZINFO(v[SV_TS]) != PyDateTime_TimeZone_UTC ||
            !PyUnicode_CheckExact(v[SV_TENANT]) || !PyUnicode_CheckExact(v[SV_RETENTION]))
            break;
        double value = PyFloat_AS_DOUBLE(v[SV_VALUE]);
        double weight = v[SV_WEIGHT] == Py_None ? 1.0 : PyFloat_AS_DOUBLE(v[SV_WEIGHT]);
        if (!isfinite(value) || !isfinite(weight))
            break;
        Py_ssize_t n_sid = 0, n_type = 0, n_source = 0, n_topic = 0, n_pid = 0;
        const char *sid = rs_plain(v[SV_SID], &n_sid), *type = rs_plain(v[SV_TYPE], &n_type),
                   *source = rs_plain(v[SV_SOURCE], &n_source),
                   *topic = rs_plain(v[SV_TOPIC], &n_topic), *pid = rs_plain(v[SV_PID], &n_pid);
        if (!sid || !type || !source || !topic || !pid)
            break;
        long long partition, offset;
        if (!exact_int64(v[SV_PARTITION], &partition) || !exact_int64(v[SV_OFFSET], &offset))
            break;
        /* the tenant's names and the retention's TTL: Python makes the first of each. The
         * record is held meanwhile (the callbacks run Python, which could drop the list's
         * reference): it holds what was read above, which is used as read (immutable). */
        Py_INCREF(item);
        PyObject *names = rs_known(keys, new_keys, v[SV_TENANT]);
        PyObject *ttl = names ? rs_known(ttls, new_ttl, v[SV_RETENTION]) : NULL;
        if (ttl == NULL) {
            Py_XDECREF(names);
            Py_DECREF(item);
            goto fail;
        }
        Py_ssize_t n_stream = 0, n_marks = 0, n_channel = 0, n_ttl = 0;
        const char *stream = NULL, *marks = NULL, *channel = NULL, *ttl_text = NULL;
        if (PyTuple_CheckExact(names) && PyTuple_GET_SIZE(names) == 3) {
            stream = rs_plain(PyTuple_GET_ITEM(names, 0), &n_stream);
            marks = rs_plain(PyTuple_GET_ITEM(names, 1), &n_marks);
            channel = rs_plain(PyTuple_GET_ITEM(names, 2), &n_channel);
        }
        ttl_text = rs_plain(ttl, &n_ttl);
        if (!stream || !marks || !channel || !ttl_text) {
            Py_DECREF(names);
            Py_DECREF(ttl);
            Py_DECREF(item);
            break;
        }
        char value_r[32], weight_r[32], iso[40], digits[24];
        Py_ssize_t n_value = rs_repr(value, value_r), n_weight = rs_repr(weight, weight_r),
                   n_iso = rs_iso(v[SV_TS], iso, 0);
        int err = n_value < 0 || n_weight < 0 || (out.len > 0 && RS_LIT(&out, ",")) ||
              RS_LIT(&out, "[\"g\",") ||
              rs_str(&out, stream, n_stream, 0) || RS_LIT(&out, ",") ||
              rs_str(&out, marks, n_marks, 0) || RS_LIT(&out, ",\"") ||
              rs_put(&out, topic, n_topic) || RS_LIT(&out, "/") ||
              rs_put(&out, digits, decimal_digits(partition, digits)) || RS_LIT(&out, "\",\"") ||
              rs_put(&out, digits, decimal_digits(offset, digits)) || RS_LIT(&out, "\",") ||
              rs_str(&out, ttl_text, n_ttl, 0) || RS_LIT(&out, ",") ||
              rs_str(&out, channel, n_channel, 0) ||
              /* the event: {"kind":"signal","id":..,"type":..,"value":..,"weight":..,
               * "source":..,"ts":..} as a string */
              RS_LIT(&out, ",\"{\\\"kind\\\":\\\"signal\\\",\\\"id\\\":") ||
              rs_str(&out, sid, n_sid, 1) || RS_LIT(&out, ",\\\"type\\\":") ||
              rs_str(&out, type, n_type, 1) || RS_LIT(&out, ",\\\"value\\\":") ||
              rs_put(&out, value_r, n_value) || RS_LIT(&out, ",\\\"weight\\\":") ||
              rs_put(&out, weight_r, n_weight) || RS_LIT(&out, ",\\\"source\\\":") ||
              rs_str(&out, source, n_source, 1) || RS_LIT(&out, ",\\\"ts\\\":") ||
              rs_str(&out, iso, n_iso, 1) || RS_LIT(&out, "}\",\"signal_id\",") ||
              rs_str(&out, sid, n_sid, 0) || RS_LIT(&out, ",\"type\",") ||
              rs_str(&out, type, n_type, 0) || RS_LIT(&out, ",\"value\",") ||
              rs_str(&out, value_r, n_value, 0) || RS_LIT(&out, ",\"weight\",") ||
              rs_str(&out, weight_r, n_weight, 0) || RS_LIT(&out, ",\"source\",") ||
              rs_str(&out, source, n_source, 0) || RS_LIT(&out, ",\"ts\",") ||
              rs_str(&out, iso, n_iso, 0) || RS_LIT(&out, ",\"provenance_id\",") ||
              rs_str(&out, pid, n_pid, 0) || RS_LIT(&out, "]");
        Py_DECREF(names);
        Py_DECREF(ttl);
        Py_DECREF(item);
        if (err)
            goto fail;
    }
    if (out.len > 0) {
        PyObject *text = PyUnicode_DecodeASCII(out.data, out.len, NULL);
        if (text == NULL || PyList_Append(parts, text) < 0) {
            Py_XDECREF(text);
            goto fail;
        }
        Py_DECREF(text);
    }
    PyMem_Free(out.data);
    return PyLong_FromSsize_t(n);
fail:
    PyMem_Free(out.data);
    return NULL;
}

/* --- the graph sink: a batch's signal rows (sinks/graph_model.py signal_row) ------------------ */

/* The row's keys, in signal_row's order: the row's 5, the signal's 9, the provenance's 12. */
static const char *const gr_row_keys[] = {"tenant_id", "key", "provenance_id", "signal",
                                          "provenance"};
static const char *const gr_signal_keys[] = {"key",    "signal_id", "tenant_id",
                                             "type",   "value",     "weight",
                                             "source", "ts",        "ts_iso"};
static const char *const gr_provenance_keys[] = {
    "provenance_id", "tenant_id",       "policy_version", "schema_version",
    "input_hash",    "kafka_topic",     "kafka_partition", "kafka_offset",
    "purpose",       "retention",       "license",        "residency"};
static PyObject *gr_keys[5 + 9 + 12];

/* A dict of n keys (interned) and values (borrowed), or NULL. */
static PyObject *
gr_dict(PyObject *const *keys, PyObject *const *values, int n)
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (PyDict_SetItem(d, keys[i], values[i]) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* graph_rows(items, at, readers, rows) -> the index of the first item from at that it left
 * (another shape, a tenant, source or signal id JSON would escape, a time not in UTC itself:
 * the caller's signal_row, the reference, takes it), or len(items).
 *
 * signal_row(item) of each signal from at, appended to rows: the same dicts, keys in the same
 * order, the same values (the record's own objects; the key the SHA-256 hex of the canonical
 * '[tenant,source,signal_id,ts_micros]'; ts in epoch microseconds and its isoformat with
 * microseconds). The records' fields are read at their slots' offsets (readers:
 * core.records.TAGGED_READERS, sv_fields). */
static PyObject *
graph_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "graph_rows takes 4 arguments");
        return NULL;
    }
    PyObject *items = args[0], *readers = args[2], *rows = args[3];
    Py_ssize_t at = PyLong_AsSsize_t(args[1]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_Check(items) || !PyList_Check(rows) || at < 0) {
        PyErr_SetString(PyExc_TypeError, "graph_rows: a list, an index, the readers, a list");
        return NULL;
    }
    if (gr_keys[0] == NULL) {
        int k = 0;
        for (size_t i = 0; i < 5; i++)
            gr_keys[k++] = PyUnicode_InternFromString(gr_row_keys[i]);
        for (size_t i = 0; i < 9; i++)
            gr_keys[k++] = PyUnicode_InternFromString(gr_signal_keys[i]);
        for (size_t i = 0; i < 12; i++)
            gr_keys[k++] = PyUnicode_InternFromString(gr_provenance_keys[i]);
        for (int i = 0; i < k; i++) {
            if (gr_keys[i] == NULL)
                return NULL;
        }
    }
    Py_ssize_t o[SV_READERS];
    PyTypeObject *cls[5];
    if (sv_readers(readers, o, cls, "graph_rows") < 0)
        return NULL;
    Py_ssize_t n = at;
    for (; n < PyList_GET_SIZE(items); n++) {
        PyObject *item = PyList_GET_ITEM(items, n), *v[SV_READERS];
        long long micros;
        if (!sv_fields(item, o, cls, v) || !utc_micros(v[SV_TS], &micros))
            break;
        Py_ssize_t n_tenant = 0, n_source = 0, n_sid = 0;
        const char *tenant = rs_plain(v[SV_TENANT], &n_tenant),
                   *source = rs_plain(v[SV_SOURCE], &n_source),
                   *sid = rs_plain(v[SV_SID], &n_sid);
        if (!tenant || !source || !sid)
            break;
        char digits[24], iso[40];
        Py_ssize_t n_digits = decimal_digits(micros, digits), n_iso = rs_iso(v[SV_TS], iso, 1);
        PyObject *key = NULL, *micros_obj = NULL, *iso_obj = NULL, *weight = NULL;
        PyObject *signal = NULL, *provenance = NULL, *row = NULL;
        if (digest_begin() == 0 && digest_add("[\"", 2) == 0 &&
            digest_add(tenant, (size_t)n_tenant) == 0 && digest_add("\",\"", 3) == 0 &&
            digest_add(source, (size_t)n_source) == 0 && digest_add("\",\"", 3) == 0 &&
            digest_add(sid, (size_t)n_sid) == 0 && digest_add("\",", 2) == 0 &&
            digest_add(digits, (size_t)n_digits) == 0 && digest_add("]", 1) == 0)
            key = digest_hex(32);
        if (key == NULL || (micros_obj = PyLong_FromLongLong(micros)) == NULL ||
            (iso_obj = PyUnicode_DecodeASCII(iso, n_iso, NULL)) == NULL ||
            (weight = v[SV_WEIGHT] == Py_None ? PyFloat_FromDouble(1.0)
                                              : Py_NewRef(v[SV_WEIGHT])) == NULL)
            goto item_fail;
        PyObject *signal_values[9] = {key,     v[SV_SID],    v[SV_TENANT],
                                      v[SV_TYPE], v[SV_VALUE], weight,
                                      v[SV_SOURCE], micros_obj, iso_obj};
        PyObject *provenance_values[12] = {
            v[SV_PID],     v[SV_TENANT],    v[SV_POLICY],    v[SV_VERSION],
            v[SV_HASH],    v[SV_TOPIC],     v[SV_PARTITION], v[SV_OFFSET],
            v[SV_PURPOSE], v[SV_RETENTION], v[SV_LICENSE],   v[SV_RESIDENCY]};
        if ((signal = gr_dict(gr_keys + 5, signal_values, 9)) == NULL ||
            (provenance = gr_dict(gr_keys + 14, provenance_values, 12)) == NULL)
            goto item_fail;
        PyObject *row_values[5] = {v[SV_TENANT], key, v[SV_PID], signal, provenance};
        if ((row = gr_dict(gr_keys, row_values, 5)) == NULL || PyList_Append(rows, row) < 0)
            goto item_fail;
        Py_DECREF(row);
        Py_DECREF(signal);
        Py_DECREF(provenance);
        Py_DECREF(key);
        Py_DECREF(micros_obj);
        Py_DECREF(iso_obj);
        Py_DECREF(weight);
        continue;
    item_fail:
        Py_XDECREF(row);
        Py_XDECREF(signal);
        Py_XDECREF(provenance);
        Py_XDECREF(key);
        Py_XDECREF(micros_obj);
        Py_XDECREF(iso_obj);
        Py_XDECREF(weight);
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

/* === end of the serving sinks ============================================================= */


static PyMethodDef functions[] = {
    {"raw_records", (PyCFunction)(void (*)(void))raw_records, METH_FASTCALL,
     PyDoc_STR("the Kafka source's common messages as records (sources.kafka._records).")},
    {"tag_run", (PyCFunction)(void (*)(void))tag_run, METH_FASTCALL,
     PyDoc_STR("tenant-tag's batch loop (operators.tenancy.tag_run without sources).")},
    {"dedupe_run", (PyCFunction)(void (*)(void))dedupe_run, METH_FASTCALL,
     PyDoc_STR("dedupe's batch check (operators.dedupe._dedupe_columns) in C.")},
    {"psi_terms", (PyCFunction)(void (*)(void))psi_terms, METH_FASTCALL,
     PyDoc_STR("drift's PSI of a sample's cuts (operators.drift_stats._psi_of), or None.")},
    {"ks_bound", (PyCFunction)(void (*)(void))ks_bound, METH_FASTCALL,
     PyDoc_STR("drift's KS bound from bin counts (operators.drift_stats._ks_cannot_fire).")},
    {"cuts_below", (PyCFunction)(void (*)(void))cuts_below, METH_FASTCALL,
     PyDoc_STR("drift's pooled bin cuts without NaNs (operators.drift_stats.drifted_check).")},
    {"drift_passes", (PyCFunction)(void (*)(void))drift_passes, METH_FASTCALL,
     PyDoc_STR("True where drift's check passes a batch by PSI and KS bound, else None.")},
    {"with_horizon", (PyCFunction)(void (*)(void))with_horizon, METH_FASTCALL,
     PyDoc_STR("drift's release: a record's copy with its horizon (operators.drift).")},
    {"validate_run", (PyCFunction)(void (*)(void))validate_run, METH_FASTCALL,
     PyDoc_STR("validate's step over a batch (operators.validate.validate_batch).")},
    {"decode_run", (PyCFunction)(void (*)(void))decode_run, METH_FASTCALL,
     PyDoc_STR("the decode step's batch loop (operators.decode.SignalDecoder.decode_many).")},
    {"score_run", (PyCFunction)(void (*)(void))score_run, METH_FASTCALL,
     PyDoc_STR("the score step's batch loop (operators.score.TickScore.add), or None.")},
    {"_score_hints", (PyCFunction)(void (*)(void))score_hints, METH_FASTCALL,
     PyDoc_STR("score_run's exact integer operations, for its tests.")},
    {"kind_of", (PyCFunction)(void (*)(void))kind_of, METH_FASTCALL,
     PyDoc_STR("the items of a list that are (or are not) instances of a plain class.")},
    {"plan_place", (PyCFunction)(void (*)(void))plan_place, METH_FASTCALL,
     PyDoc_STR("a replay plan's rows into their planned commits (sinks.lake_plan._place).")},
    {"lake_columns", (PyCFunction)(void (*)(void))lake_columns, METH_FASTCALL,
     PyDoc_STR("the Arrow buffers of a lake batch's columns (sinks.lake_tables), or None.")},
    /* drift run (branch driftc) */
    {"drift_run", (PyCFunction)(void (*)(void))drift_run, METH_FASTCALL,
     PyDoc_STR("drift's plain path (operators.drift.TenantDrift.push_batch): the next index.")},
    {"redis_signals", (PyCFunction)(void (*)(void))redis_signals, METH_FASTCALL,
     PyDoc_STR("the Redis script's operations of a batch's signals (sinks.redis._Batch).")},
    {"graph_rows", (PyCFunction)(void (*)(void))graph_rows, METH_FASTCALL,
     PyDoc_STR("the graph sink's rows of a batch's signals (sinks.graph_model.signal_row).")},
    {"exchange_init", (PyCFunction)(void (*)(void))exchange_init, METH_FASTCALL,
     PyDoc_STR("the exchange's record classes, UTC and fingerprint (core.records).")},
    {"exchange_pack", (PyCFunction)(void (*)(void))exchange_pack, METH_FASTCALL,
     PyDoc_STR("a run as one bytes object for the exchange (Records.__reduce__), or None.")},
    {"exchange_unpack", (PyCFunction)(void (*)(void))exchange_unpack, METH_FASTCALL,
     PyDoc_STR("the run exchange_pack wrote, as a list of new records.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "core._native",
    "Clean paths of the flow in C: the source's records, decode's reader, tenant-tag's loop, "
    "validate's step, dedupe's check, drift's statistics, score's loop, the lake's Arrow "
    "buffers, the exchange of runs between processes.",
    -1, functions,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    if (sha256_md == NULL) {
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        sha256_ctx = EVP_MD_CTX_new();
        if (sha256_md == NULL || sha256_ctx == NULL) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL: no SHA-256");
            return NULL;
        }
    }
    s_topic = PyUnicode_InternFromString("topic");
    s_partition = PyUnicode_InternFromString("partition");
    s_offset = PyUnicode_InternFromString("offset");
    s_timestamp_ms = PyUnicode_InternFromString("timestamp_ms");
    s_kafka_partition = PyUnicode_InternFromString("kafka_partition");
    s_kafka_offset = PyUnicode_InternFromString("kafka_offset");
    s_error = PyUnicode_InternFromString("error");
    s_key = PyUnicode_InternFromString("key");
    s_value = PyUnicode_InternFromString("value");
    s_timestamp = PyUnicode_InternFromString("timestamp");
    s_headers = PyUnicode_InternFromString("headers");
    if (!s_error || !s_key || !s_value || !s_timestamp || !s_headers)
        return NULL;
    if (!s_topic || !s_partition || !s_offset || !s_timestamp_ms || !s_kafka_partition ||
        !s_kafka_offset)
        return NULL;
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
