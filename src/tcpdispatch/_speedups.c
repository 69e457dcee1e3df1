/* tcpdispatch._speedups: the dispatch hot path in C (optional accelerator), and its random generator.
 *
 * One FastDispatch object per dispatch service does, in a single call, what the
 * pure-Python path does in several: recognise a plain complete
 * "GET /v1/dispatch?client_id=X" request, pick with p2c or weighted random
 * over the current snapshot, sign one HMAC-SHA256 ticket (OpenSSL's SHA-256 on
 * precomputed inner/outer pads) and assemble the whole HTTP answer. It counts
 * how long each answer it builds took in a histogram (bounds given by Python)
 * that the metrics collector reads at scrape time.
 *
 * It is the twin of the Python path, not a second implementation: every
 * constant (rejection draws, ticket limits, answer pieces, HTTP framing, the
 * request limits, the fields it reads and writes) is handed in by
 * tcpdispatch/dispatcher/fastpath.py from its one Python definition; draws come
 * from the SplitMix64 object below, the very generator the Python pickers and
 * the ticket signer use (tcpdispatch/rng.py has its Python twin); and the
 * ticket time comes from the app's clock when one is injected. So for the
 * same seed, clock and pool both paths give the same bytes
 * (tests/dispatcher/test_parity.py). Whenever it declines (another request
 * shape, an encoded client_id, no gateway free, a keyed policy) it returns
 * None with the generator rewound, and the Python path answers by the same
 * rules and the same draws.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co.: the only way to copy a keyed state cheaply */
#include <openssl/sha.h>

/* Array bounds only; the values in use come from Python and are checked against these. */
#define TICKET_BUF 8192  /* longest max_ticket accepted */
#define MAX_K 17         /* 1 + the largest alternates accepted */
#define MAX_BOUNDS 32    /* latency histogram buckets (finite bounds) */
#define MAX_ATTEMPTS 64  /* rejection draws */

/* Picker.c_policy codes (tcpdispatch/balancing/_sampling.py C_TWO_CHOICES, C_ONE_DRAW). */
enum { POLICY_OFF = -1, POLICY_TWO_CHOICES = 0, POLICY_ONE_DRAW = 1 };

/* The answer around its variable parts, in the order fastpath.ANSWER_PIECES lists them. */
enum { A_OPEN, A_TICKET, A_ALTERNATES, A_ALT_TICKET, A_ALT_CLOSE, A_ALT_SEP, A_CLOSE, N_PIECES };
/* HTTP framing, in the order fastpath.framing() lists it. */
enum { H_STATUS, H_HEAD, H_CLOSE, H_LENGTH, H_END, N_FRAMING };

/* ------------------------------------------------------------------ random: splitmix64 */

typedef struct {
    PyObject_HEAD
    uint64_t s;
} SplitMix;

static PyTypeObject SplitMixType;

static inline uint64_t sm_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The top 53 bits over 2**53, as CPython's random() and rng.PySplitMix64.random(). */
static inline double sm_double(uint64_t *s) { return (double)(sm_next(s) >> 11) * 0x1.0p-53; }

static int SM_init(SplitMix *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"state", NULL};
    PyObject *state = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O!", names, &PyLong_Type, &state)) return -1;
    self->s = state ? PyLong_AsUnsignedLongLongMask(state) : 0;
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *SM_next64(SplitMix *self, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(sm_next(&self->s));
}

static PyObject *SM_random(SplitMix *self, PyObject *unused) {
    return PyFloat_FromDouble(sm_double(&self->s));
}

static PyObject *SM_getrandbits(SplitMix *self, PyObject *arg) {
    long k = PyLong_AsLong(arg);
    if (k == -1 && PyErr_Occurred()) return NULL;
    if (k < 0 || k > 64) {
        PyErr_SetString(PyExc_ValueError, "k must be 0..64");
        return NULL;
    }
    if (k == 0) return PyLong_FromLong(0);
    return PyLong_FromUnsignedLongLong(sm_next(&self->s) >> (64 - k));
}

static PyObject *SM_getstate(SplitMix *self, PyObject *unused) { return PyLong_FromUnsignedLongLong(self->s); }

static PyObject *SM_setstate(SplitMix *self, PyObject *arg) {
    if (!PyLong_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "state must be an int");
        return NULL;
    }
    uint64_t s = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred()) return NULL;
    self->s = s;
    Py_RETURN_NONE;
}

static PyMethodDef SM_methods[] = {
    {"next64", (PyCFunction)SM_next64, METH_NOARGS, "next64() -> the next 64-bit output."},
    {"random", (PyCFunction)SM_random, METH_NOARGS, "random() -> float in [0, 1), 53 bits."},
    {"getrandbits", (PyCFunction)SM_getrandbits, METH_O, "getrandbits(k) -> the top k (0..64) bits of one output."},
    {"getstate", (PyCFunction)SM_getstate, METH_NOARGS, "getstate() -> the 64-bit state."},
    {"setstate", (PyCFunction)SM_setstate, METH_O, "setstate(state): restart from a 64-bit state."},
    {NULL},
};

static PyTypeObject SplitMixType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tcpdispatch._speedups.SplitMix64",
    .tp_basicsize = sizeof(SplitMix),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "splitmix64; see tcpdispatch.rng (PySplitMix64 is its Python twin).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SM_init,
    .tp_methods = SM_methods,
};

/* ------------------------------------------------------------------ the accelerator */

typedef struct {
    PyObject *load;  /* LoadCounter (reported, issued, headroom) */
    PyObject *id;    /* str, the key in Stats.per_gateway */
    PyObject *frag;  /* bytes: {"id":..,"host":..,"port":N   (no closing brace) */
    PyObject *idenc; /* bytes: u8 length + UTF-8 id, as in the ticket payload */
    double weight;
    long long limit; /* -1: unbounded */
} Cand;

typedef struct {
    double prob;
    Py_ssize_t alias;
} Slot;

typedef struct {
    PyObject_HEAD
    SHA256_CTX inner, outer;
    unsigned lifetime;
    int k;
    int attempts;          /* balancing._sampling.ATTEMPTS */
    Py_ssize_t max_ticket; /* tickets.MAX_TICKET */
    int mac_size;          /* tickets.MAC_SIZE */
    Py_ssize_t max_client_id, max_head, max_url, max_headers;
    PyObject *tail;      /* bytes after '],' : "heartbeat_s":..}} */
    PyObject *date_line; /* bytes: "date: ...\r\n" */
    PyObject *stats;     /* Stats: .dispatched, .per_gateway */
    SplitMix *rng;       /* the shared generator (tcpdispatch.rng.SplitMixRandom.core) */
    PyObject *clock;     /* NULL: the wall clock; else a callable -> seconds (an injected clock) */
    PyObject *pieces[N_PIECES];
    PyObject *framing[N_FRAMING];
    /* member descriptors handed in by Python: LoadCounter.reported/.issued/.headroom,
     * Stats.dispatched/.per_gateway (read and written through their slots, not by name) */
    PyObject *f_reported, *f_issued, *f_headroom, *f_dispatched, *f_per_gateway;
    int policy;
    Py_ssize_t n;
    Cand *cands;
    Slot *slots; /* alias table, probability and alias side by side: one cache line per draw */
    PyObject *weakrefs;
    /* answer-time histogram of the requests answered here (bounds given by Python) */
    int nbounds;
    double bounds[MAX_BOUNDS];
    unsigned long long lat_counts[MAX_BOUNDS + 1];
    double lat_sum;
} FastDispatch;

static PyObject *one;

/* ------------------------------------------------------------------ load */

static inline PyObject *field_get(PyObject *desc, PyObject *obj) {
    return Py_TYPE(desc)->tp_descr_get(desc, obj, (PyObject *)Py_TYPE(obj));
}

static inline int field_set(PyObject *desc, PyObject *obj, PyObject *v) {
    return Py_TYPE(desc)->tp_descr_set(desc, obj, v);
}

static int get_ll(PyObject *desc, PyObject *obj, long long *out) {
    PyObject *v = field_get(desc, obj);
    if (v == NULL) return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Candidate.full: 1 full, 0 usable, -1 error. Fills *current (reported + issued). */
static int cand_full(FastDispatch *f, Cand *c, long long *current) {
    long long reported, issued;
    if (get_ll(f->f_reported, c->load, &reported) < 0 || get_ll(f->f_issued, c->load, &issued) < 0) return -1;
    *current = reported + issued;
    if (c->limit >= 0 && *current >= c->limit) return 1;
    PyObject *headroom = field_get(f->f_headroom, c->load);
    if (headroom == NULL) return -1;
    int full = 0;
    if (headroom != Py_None) {
        long long h = PyLong_AsLongLong(headroom);
        if (h == -1 && PyErr_Occurred()) full = -1;
        else full = issued >= h;
    }
    Py_DECREF(headroom);
    return full;
}

static int in_set(const Py_ssize_t *set, int n, Py_ssize_t i) {
    for (int j = 0; j < n; j++)
        if (set[j] == i) return 1;
    return 0;
}

/* One weight-drawn usable candidate (not `avoid`, not in `excl`): index, -1 none, -2 error.
 * WeightedSamplingPicker._draw_one: alias draws first, then an exact O(n) scan (weighted_index). */
static Py_ssize_t draw_one(FastDispatch *f, const Py_ssize_t *excl, int nexcl, Py_ssize_t avoid,
                           long long *current) {
    Py_ssize_t n = f->n;
    uint64_t *rng = &f->rng->s;
    for (int a = 0; a < f->attempts; a++) {
        double u = sm_double(rng) * (double)n;
        Py_ssize_t i = (Py_ssize_t)u;
        if (i >= n) i = n - 1;
        if (u - (double)i >= f->slots[i].prob) i = f->slots[i].alias;
        if (i == avoid || in_set(excl, nexcl, i)) continue;
        int full = cand_full(f, &f->cands[i], current);
        if (full < 0) return -2;
        if (!full) return i;
    }
    double total = 0.0;
    Py_ssize_t usable = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i == avoid || in_set(excl, nexcl, i)) continue;
        long long cur;
        int full = cand_full(f, &f->cands[i], &cur);
        if (full < 0) return -2;
        if (!full) { total += f->cands[i].weight; usable++; }
    }
    if (usable == 0) return -1;
    double target = sm_double(rng) * total, cum = 0.0;
    Py_ssize_t last = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i == avoid || in_set(excl, nexcl, i)) continue;
        long long cur;
        int full = cand_full(f, &f->cands[i], &cur);
        if (full < 0) return -2;
        if (full) continue;
        last = i;
        cum += f->cands[i].weight;
        if (target < cum) { *current = cur; return i; }
    }
    if (last >= 0 && cand_full(f, &f->cands[last], current) < 0) return -2;
    return last;
}

/* The policy's choice among the usable candidates not in `excl`: index, -1 none, -2 error. */
static Py_ssize_t choose(FastDispatch *f, const Py_ssize_t *excl, int nexcl) {
    long long la, lb;
    Py_ssize_t a = draw_one(f, excl, nexcl, -1, &la);
    if (a < 0 || f->policy == POLICY_ONE_DRAW) return a;
    Py_ssize_t b = draw_one(f, excl, nexcl, a, &lb);
    if (b == -2) return -2;
    if (b < 0) return a;
    /* P2CPicker._better: a.load/a.weight <= b.load/b.weight, ties to the first draw */
    return ((double)la * f->cands[b].weight <= (double)lb * f->cands[a].weight) ? a : b;
}

/* One more ticket issued for this candidate (LoadCounter.issued += 1). */
static int count_issued(FastDispatch *f, Cand *c) {
    long long issued;
    if (get_ll(f->f_issued, c->load, &issued) < 0) return -1;
    PyObject *v = PyLong_FromLongLong(issued + 1);
    if (v == NULL || field_set(f->f_issued, c->load, v) < 0) { Py_XDECREF(v); return -1; }
    Py_DECREF(v);
    return 0;
}

/* Primary then alternates into out[]; returns how many (0: none usable), -1 on error.
 * The caller counts the primary's ticket (alternates never include the primary, so
 * counting it later changes no choice). */
static int pick(FastDispatch *f, Py_ssize_t *out) {
    Py_ssize_t first = choose(f, NULL, 0);
    if (first == -2) return -1;
    if (first < 0) return 0;
    out[0] = first;
    int count = 1;
    if (f->n <= f->k) {
        /* every other candidate is an alternate anyway: list the usable ones in order */
        for (Py_ssize_t i = 0; i < f->n && count < f->k; i++) {
            if (i == first) continue;
            long long cur;
            int full = cand_full(f, &f->cands[i], &cur);
            if (full < 0) return -1;
            if (!full) out[count++] = i;
        }
        return count;
    }
    while (count < f->k) {
        Py_ssize_t alt = choose(f, out, count);
        if (alt == -2) return -1;
        if (alt < 0) break;
        out[count++] = alt;
    }
    return count;
}

/* ------------------------------------------------------------------ ticket */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static Py_ssize_t b64url_len(Py_ssize_t n) { return (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0); }

static char *b64url(char *dst, const unsigned char *src, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        *dst++ = B64URL[v >> 18]; *dst++ = B64URL[(v >> 12) & 63];
        *dst++ = B64URL[(v >> 6) & 63]; *dst++ = B64URL[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        *dst++ = B64URL[v >> 18]; *dst++ = B64URL[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        *dst++ = B64URL[v >> 18]; *dst++ = B64URL[(v >> 12) & 63]; *dst++ = B64URL[(v >> 6) & 63];
    }
    return dst;
}

/* The ticket's issue time, int(clock()) as TicketSigner takes it: 0 ok, 1 out of the u32
 * range (Python raises then), -1 error. Without an injected clock: the wall clock read `wall`. */
static int issue_time(FastDispatch *f, const struct timespec *wall, uint32_t *out) {
    if (f->clock == NULL) {
        *out = (uint32_t)wall->tv_sec;
        return 0;
    }
    PyObject *v = PyObject_CallNoArgs(f->clock);
    if (v == NULL) return -1;
    PyObject *i = PyNumber_Long(v);
    Py_DECREF(v);
    if (i == NULL) return -1;
    int overflow;
    long long t = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (t == -1 && PyErr_Occurred()) return -1;
    if (overflow || t < 0 || t > 0xFFFFFFFFLL) return 1;
    *out = (uint32_t)t;
    return 0;
}

/* "v1.<payload>.<mac>" into dst (at least TICKET_BUF + 1 bytes); its length, -1 to decline
 * (too long, or a time out of range: the Python path raises), -2 on error. */
static Py_ssize_t make_ticket(FastDispatch *f, char *dst, const Py_ssize_t *chosen, int count,
                              const char *cid, Py_ssize_t cid_len, const struct timespec *ts) {
    unsigned char payload[14 + 1 + MAX_K * 256 + 256], *p = payload;
    uint32_t now;
    int rc = issue_time(f, ts, &now);
    if (rc != 0) return rc < 0 ? -2 : -1;
    uint64_t nonce = sm_next(&f->rng->s);
    *p++ = now >> 24; *p++ = now >> 16; *p++ = now >> 8; *p++ = now;
    *p++ = f->lifetime >> 8; *p++ = f->lifetime;
    for (int i = 7; i >= 0; i--) *p++ = (unsigned char)(nonce >> (8 * i));
    *p++ = (unsigned char)count;
    for (int i = 0; i < count; i++) {
        PyObject *enc = f->cands[chosen[i]].idenc;
        memcpy(p, PyBytes_AS_STRING(enc), PyBytes_GET_SIZE(enc));
        p += PyBytes_GET_SIZE(enc);
    }
    *p++ = (unsigned char)cid_len;
    memcpy(p, cid, cid_len);
    p += cid_len;
    Py_ssize_t plen = p - payload;
    Py_ssize_t total = 3 + b64url_len(plen) + 1 + b64url_len(f->mac_size);
    if (total > f->max_ticket) return -1;
    memcpy(dst, "v1.", 3);
    char *end = b64url(dst + 3, payload, plen);
    unsigned char ih[SHA256_DIGEST_LENGTH], mac[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx = f->inner;
    SHA256_Update(&ctx, dst, end - dst);
    SHA256_Final(ih, &ctx);
    ctx = f->outer;
    SHA256_Update(&ctx, ih, sizeof ih);
    SHA256_Final(mac, &ctx);
    *end++ = '.';
    end = b64url(end, mac, f->mac_size);
    return end - dst;
}

/* ------------------------------------------------------------------ answer */

static inline char *put(char *dst, const char *src, Py_ssize_t n) {
    memcpy(dst, src, n);
    return dst + n;
}

static inline char *put_bytes(char *dst, PyObject *b) {
    return put(dst, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
}

#define PIECE(i) PyBytes_GET_SIZE(f->pieces[i])
#define FRAME(i) PyBytes_GET_SIZE(f->framing[i])

static int count_dispatch(FastDispatch *f, Py_ssize_t first) {
    PyObject *v = field_get(f->f_dispatched, f->stats);
    if (v == NULL) return -1;
    PyObject *w = PyNumber_Add(v, one);
    Py_DECREF(v);
    if (w == NULL || field_set(f->f_dispatched, f->stats, w) < 0) { Py_XDECREF(w); return -1; }
    Py_DECREF(w);
    PyObject *per = field_get(f->f_per_gateway, f->stats);
    if (per == NULL) return -1;
    if (!PyDict_Check(per)) {
        PyErr_SetString(PyExc_TypeError, "per_gateway must be a dict");
        Py_DECREF(per);
        return -1;
    }
    PyObject *id = f->cands[first].id;
    PyObject *old = PyDict_GetItemWithError(per, id); /* borrowed */
    if (old == NULL && PyErr_Occurred()) { Py_DECREF(per); return -1; }
    PyObject *nv = old ? PyNumber_Add(old, one) : PyLong_FromLong(1);
    int rc = (nv == NULL || PyDict_SetItem(per, id, nv) < 0) ? -1 : 0;
    Py_XDECREF(nv);
    Py_DECREF(per);
    return rc;
}

/* The JSON answer, or with http > 0 the whole HTTP/1.1 answer (http == 2: connection: close).
 * NULL with no exception set: the Python path should answer, and the generator is as it was. */
static PyObject *build(FastDispatch *f, const char *cid, Py_ssize_t cid_len, int http,
                       const struct timespec *now) {
    if (f->policy == POLICY_OFF || f->n == 0 || f->stats == NULL || f->tail == NULL) return NULL;
    uint64_t rewind = f->rng->s; /* on declining, Python redraws exactly what we drew */
    Py_ssize_t chosen[MAX_K];
    int count = pick(f, chosen);
    if (count <= 0) {
        if (count == 0) f->rng->s = rewind;
        return NULL;
    }
    char ticket[TICKET_BUF + 1];
    Py_ssize_t tlen = make_ticket(f, ticket, chosen, count, cid, cid_len, now);
    if (tlen < 0) { /* too long: Python raises the error, nothing was counted */
        if (tlen == -1) f->rng->s = rewind;
        return NULL;
    }
    if (count_issued(f, &f->cands[chosen[0]]) < 0 || count_dispatch(f, chosen[0]) < 0) return NULL;

    Py_ssize_t body = PIECE(A_OPEN) + PyBytes_GET_SIZE(f->cands[chosen[0]].frag) + PIECE(A_TICKET) + tlen
                      + PIECE(A_ALTERNATES) + PIECE(A_CLOSE) + PyBytes_GET_SIZE(f->tail);
    for (int i = 1; i < count; i++)
        body += (i > 1 ? PIECE(A_ALT_SEP) : 0) + PyBytes_GET_SIZE(f->cands[chosen[i]].frag)
                + PIECE(A_ALT_TICKET) + tlen + PIECE(A_ALT_CLOSE);
    char clen[24];
    int clen_n = 0;
    Py_ssize_t size = body;
    if (http) {
        clen_n = snprintf(clen, sizeof clen, "%zd", body);
        size += FRAME(H_STATUS) + PyBytes_GET_SIZE(f->date_line) + FRAME(H_HEAD)
                + (http == 2 ? FRAME(H_CLOSE) : 0) + FRAME(H_LENGTH) + clen_n + FRAME(H_END);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    char *d = PyBytes_AS_STRING(out);
    if (http) {
        d = put_bytes(d, f->framing[H_STATUS]);
        d = put_bytes(d, f->date_line);
        d = put_bytes(d, f->framing[H_HEAD]);
        if (http == 2) d = put_bytes(d, f->framing[H_CLOSE]);
        d = put_bytes(d, f->framing[H_LENGTH]);
        d = put(d, clen, clen_n);
        d = put_bytes(d, f->framing[H_END]);
    }
    d = put_bytes(d, f->pieces[A_OPEN]);
    d = put_bytes(d, f->cands[chosen[0]].frag);
    d = put_bytes(d, f->pieces[A_TICKET]);
    d = put(d, ticket, tlen);
    d = put_bytes(d, f->pieces[A_ALTERNATES]);
    for (int i = 1; i < count; i++) {
        if (i > 1) d = put_bytes(d, f->pieces[A_ALT_SEP]);
        d = put_bytes(d, f->cands[chosen[i]].frag);
        d = put_bytes(d, f->pieces[A_ALT_TICKET]);
        d = put(d, ticket, tlen);
        d = put_bytes(d, f->pieces[A_ALT_CLOSE]);
    }
    d = put_bytes(d, f->pieces[A_CLOSE]);
    d = put_bytes(d, f->tail);
    assert(d == PyBytes_AS_STRING(out) + size);
    return out;
}

/* ------------------------------------------------------------------ request recognizer */

static unsigned char TCHAR[256], VALCHAR[256], CIDCHAR[256], TARGETCHAR[256];

static void init_tables(void) {
    const char *extra = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        TCHAR[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                   || (c && strchr(extra, c) != NULL);
        VALCHAR[c] = c == '\t' || (c >= 0x20 && c != 0x7f);
        TARGETCHAR[c] = c > 0x20 && c < 0x7f;
        /* what the Python fast form takes as is: printable, no '&', '%' (and no '#');
         * '+' is a literal plus (RFC 3986 query, not an HTML form) */
        CIDCHAR[c] = TARGETCHAR[c] && c != '&' && c != '%' && c != '#';
    }
}

static int name_is(const char *name, Py_ssize_t n, const char *lower) {
    Py_ssize_t m = (Py_ssize_t)strlen(lower);
    if (n != m) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c != lower[i]) return 0;
    }
    return 1;
}

/* Parse one complete, plain request in buf[0:len]: 1 with cid set and *close, 0 not ours. */
static int recognize(FastDispatch *f, const char *buf, Py_ssize_t len, const char **cid,
                     Py_ssize_t *cid_len, int *close) {
    static const char START[] = "GET /v1/dispatch?client_id=";
    const Py_ssize_t start = sizeof(START) - 1;
    if (len > f->max_head || len < start + 14 || memcmp(buf, START, start) != 0) return 0;
    Py_ssize_t i = start;
    while (i < len && CIDCHAR[(unsigned char)buf[i]]) i++;
    *cid = buf + start;
    *cid_len = i - start;
    if (*cid_len == 0 || *cid_len > f->max_client_id || i - 4 > f->max_url) return 0;
    if (len - i < 12 || memcmp(buf + i, " HTTP/1.1\r\n", 11) != 0) return 0;
    i += 11;
    *close = 0;
    Py_ssize_t headers = 0;
    for (;;) {
        if (i + 2 <= len && buf[i] == '\r' && buf[i + 1] == '\n')
            /* whole buffer, and within max_head as Python counts it: target + (name + value + 4)
             * per field, at most one byte per field more than the raw head less its 17 fixed bytes */
            return i + 2 == len && len - 17 + headers <= f->max_head;
        Py_ssize_t name = i;
        while (i < len && TCHAR[(unsigned char)buf[i]]) i++;
        Py_ssize_t name_len = i - name;
        if (name_len == 0 || i >= len || buf[i] != ':') return 0;
        i++;
        while (i < len && (buf[i] == ' ' || buf[i] == '\t')) i++;
        Py_ssize_t value = i;
        while (i < len && VALCHAR[(unsigned char)buf[i]]) i++;
        Py_ssize_t value_end = i;
        if (i + 2 > len || buf[i] != '\r' || buf[i + 1] != '\n') return 0;
        i += 2;
        if (++headers > f->max_headers) return 0;
        while (value_end > value && (buf[value_end - 1] == ' ' || buf[value_end - 1] == '\t')) value_end--;
        const char *nm = buf + name;
        switch (nm[0] | 0x20) { /* only headers that change framing or the connection matter */
        case 'c':
            if (name_is(nm, name_len, "content-length")) return 0;
            if (name_is(nm, name_len, "connection")) {
                if (name_is(buf + value, value_end - value, "close")) *close = 1;
                else if (!name_is(buf + value, value_end - value, "keep-alive")) return 0;
            }
            break;
        case 't':
            if (name_is(nm, name_len, "transfer-encoding")) return 0;
            break;
        case 'u':
            if (name_is(nm, name_len, "upgrade")) return 0;
            break;
        case 'e':
            if (name_is(nm, name_len, "expect")) return 0;
            break;
        case 'p': /* llhttp reads Proxy-Connection as Connection */
            if (name_is(nm, name_len, "proxy-connection")) return 0;
            break;
        }
    }
}

/* ------------------------------------------------------------------ latency */

/* Seconds since t0, from the wall clock that also dates the ticket (one clock read per answer
 * saved); a clock step backwards counts as 0. */
static inline double elapsed(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_REALTIME, &t1);
    double d = (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) * 1e-9;
    return d > 0.0 ? d : 0.0;
}

/* Count one answer time: the first bucket whose bound is >= seconds, else +Inf. */
static inline void observe(FastDispatch *f, double seconds) {
    int i = 0;
    while (i < f->nbounds && seconds > f->bounds[i]) i++;
    f->lat_counts[i]++;
    f->lat_sum += seconds;
}

/* Read the bounds (ascending floats); 0 ok, -1 error. Counts restart when the bounds change. */
static int set_bounds(FastDispatch *f, PyObject *seq) {
    PyObject *fast = PySequence_Fast(seq, "latency_bounds must be a sequence");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    double b[MAX_BOUNDS];
    int rc = 0;
    if (n > MAX_BOUNDS) {
        PyErr_SetString(PyExc_ValueError, "at most 32 latency bounds");
        rc = -1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        b[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (b[i] == -1.0 && PyErr_Occurred()) rc = -1;
        else if (i > 0 && !(b[i] > b[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "latency bounds must be ascending");
            rc = -1;
        }
    }
    Py_DECREF(fast);
    if (rc < 0) return -1;
    if (n != f->nbounds || memcmp(b, f->bounds, n * sizeof(double)) != 0) {
        memcpy(f->bounds, b, n * sizeof(double));
        f->nbounds = (int)n;
        memset(f->lat_counts, 0, sizeof f->lat_counts);
        f->lat_sum = 0.0;
    }
    return 0;
}

/* ------------------------------------------------------------------ type */

/* A tuple of exactly n bytes objects into out[] (new references); 0 ok, -1 error. */
static int bytes_tuple(PyObject *seq, int n, PyObject **out, const char *what) {
    if (!PyTuple_Check(seq) || PyTuple_GET_SIZE(seq) != n) {
        PyErr_Format(PyExc_ValueError, "%s must be a tuple of %d bytes", what, n);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(seq, i))) {
            PyErr_Format(PyExc_TypeError, "%s must be a tuple of %d bytes", what, n);
            return -1;
        }
    for (int i = 0; i < n; i++) {
        PyObject *b = PyTuple_GET_ITEM(seq, i);
        Py_INCREF(b);
        Py_XSETREF(out[i], b);
    }
    return 0;
}

/* A tuple of exactly n data descriptors (slots read and written in place of names). */
static int descr_tuple(PyObject *seq, int n, PyObject **out[], const char *what) {
    if (!PyTuple_Check(seq) || PyTuple_GET_SIZE(seq) != n) {
        PyErr_Format(PyExc_ValueError, "%s must be a tuple of %d fields", what, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        PyObject *d = PyTuple_GET_ITEM(seq, i);
        if (Py_TYPE(d)->tp_descr_get == NULL || Py_TYPE(d)->tp_descr_set == NULL) {
            PyErr_Format(PyExc_TypeError, "%s: item %d is not a data descriptor (a __slots__ member)", what, i);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        PyObject *d = PyTuple_GET_ITEM(seq, i);
        Py_INCREF(d);
        Py_XSETREF(*out[i], d);
    }
    return 0;
}

static int FD_init(FastDispatch *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"secret", "lifetime", "alternates", "max_client_id", "max_head", "max_url",
                            "max_headers", "tail", "stats", "rng", "clock", "latency_bounds", "attempts",
                            "max_ticket", "mac_size", "load_fields", "stats_fields", "answer", "framing",
                            NULL};
    Py_buffer secret;
    int lifetime, alternates, attempts, mac_size;
    Py_ssize_t max_client_id, max_head, max_url, max_headers, max_ticket;
    PyObject *tail, *stats, *rng, *clock, *bounds, *load_fields, *stats_fields, *answer, *framing;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*iinnnnSOO!OOiniOOOO", names, &secret, &lifetime,
                                     &alternates, &max_client_id, &max_head, &max_url, &max_headers, &tail,
                                     &stats, &SplitMixType, &rng, &clock, &bounds, &attempts, &max_ticket,
                                     &mac_size, &load_fields, &stats_fields, &answer, &framing))
        return -1;
    int ok = 0;
    PyObject **load_out[] = {&self->f_reported, &self->f_issued, &self->f_headroom};
    PyObject **stats_out[] = {&self->f_dispatched, &self->f_per_gateway};
    if (set_bounds(self, bounds) < 0) { /* exception set */ }
    else if (lifetime < 1 || lifetime > 65535) PyErr_SetString(PyExc_ValueError, "lifetime must be 1..65535");
    else if (alternates < 0 || alternates > MAX_K - 1) PyErr_SetString(PyExc_ValueError, "alternates must be 0..16");
    else if (max_client_id > 255) PyErr_SetString(PyExc_ValueError, "max_client_id must be at most 255");
    else if (attempts < 1 || attempts > MAX_ATTEMPTS) PyErr_SetString(PyExc_ValueError, "attempts must be 1..64");
    else if (max_ticket < 1 || max_ticket > TICKET_BUF) PyErr_SetString(PyExc_ValueError, "max_ticket must be 1..8192");
    else if (mac_size < 1 || mac_size > SHA256_DIGEST_LENGTH) PyErr_SetString(PyExc_ValueError, "mac_size must be 1..32");
    else if (clock != Py_None && !PyCallable_Check(clock)) PyErr_SetString(PyExc_TypeError, "clock must be None or callable");
    else if (bytes_tuple(answer, N_PIECES, self->pieces, "answer") < 0) { /* exception set */ }
    else if (bytes_tuple(framing, N_FRAMING, self->framing, "framing") < 0) { /* exception set */ }
    else if (descr_tuple(load_fields, 3, load_out, "load_fields") < 0) { /* exception set */ }
    else if (descr_tuple(stats_fields, 2, stats_out, "stats_fields") < 0) { /* exception set */ }
    else ok = 1;
    if (ok) {
        unsigned char key[64] = {0}, pad[64];
        if (secret.len > 64) SHA256(secret.buf, secret.len, key);
        else memcpy(key, secret.buf, secret.len);
        for (int i = 0; i < 64; i++) pad[i] = key[i] ^ 0x36;
        SHA256_Init(&self->inner);
        SHA256_Update(&self->inner, pad, 64);
        for (int i = 0; i < 64; i++) pad[i] = key[i] ^ 0x5c;
        SHA256_Init(&self->outer);
        SHA256_Update(&self->outer, pad, 64);
        self->lifetime = (unsigned)lifetime;
        self->k = alternates + 1;
        self->attempts = attempts;
        self->max_ticket = max_ticket;
        self->mac_size = mac_size;
        self->max_client_id = max_client_id;
        self->max_head = max_head;
        self->max_url = max_url;
        self->max_headers = max_headers;
        Py_INCREF(tail);
        Py_XSETREF(self->tail, tail);
        Py_INCREF(stats);
        Py_XSETREF(self->stats, stats);
        Py_INCREF(rng);
        Py_XSETREF(self->rng, (SplitMix *)rng);
        if (clock == Py_None) Py_CLEAR(self->clock);
        else {
            Py_INCREF(clock);
            Py_XSETREF(self->clock, clock);
        }
        if (self->date_line == NULL) self->date_line = PyBytes_FromString("");
    }
    PyBuffer_Release(&secret);
    return ok && self->date_line != NULL ? 0 : -1;
}

static void free_cands(Cand *cands, Slot *slots, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(cands[i].load);
        Py_XDECREF(cands[i].id);
        Py_XDECREF(cands[i].frag);
        Py_XDECREF(cands[i].idenc);
    }
    PyMem_Free(cands);
    PyMem_Free(slots);
}

/* Detach the snapshot first, then release it: a decref may run Python code that calls us. */
static void clear_pool(FastDispatch *self) {
    Cand *cands = self->cands;
    Slot *slots = self->slots;
    Py_ssize_t n = self->n;
    self->cands = NULL;
    self->slots = NULL;
    self->n = 0;
    self->policy = POLICY_OFF;
    free_cands(cands, slots, n);
}

static int FD_clear(FastDispatch *self) {
    clear_pool(self);
    Py_CLEAR(self->stats);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->rng);
    return 0;
}

static void FD_dealloc(FastDispatch *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    FD_clear(self);
    Py_CLEAR(self->tail);
    Py_CLEAR(self->date_line);
    for (int i = 0; i < N_PIECES; i++) Py_CLEAR(self->pieces[i]);
    for (int i = 0; i < N_FRAMING; i++) Py_CLEAR(self->framing[i]);
    Py_CLEAR(self->f_reported);
    Py_CLEAR(self->f_issued);
    Py_CLEAR(self->f_headroom);
    Py_CLEAR(self->f_dispatched);
    Py_CLEAR(self->f_per_gateway);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int FD_traverse(FastDispatch *self, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < self->n; i++) Py_VISIT(self->cands[i].load);
    Py_VISIT(self->stats);
    Py_VISIT(self->clock);
    Py_VISIT(self->rng);
    return 0;
}

PyDoc_STRVAR(set_pool_doc,
"set_pool(policy, rows, prob, alias)\n--\n\n"
"Install a snapshot. policy: the picker's c_policy (0 two choices, 1 one draw), -1 off\n"
"(every call returns None). rows: (load, id, fragment, encoded id, weight, limit or\n"
"None) per candidate, in picker order; prob/alias: the picker's alias table.");

static PyObject *FD_set_pool(FastDispatch *self, PyObject *args) {
    int policy;
    PyObject *rows, *prob, *alias;
    if (!PyArg_ParseTuple(args, "iOOO", &policy, &rows, &prob, &alias)) return NULL;
    clear_pool(self); /* off until the new snapshot is complete: never serve a stale one */
    if (policy == POLICY_OFF) Py_RETURN_NONE;
    if (policy != POLICY_TWO_CHOICES && policy != POLICY_ONE_DRAW) {
        PyErr_SetString(PyExc_ValueError, "policy must be -1, 0 or 1");
        return NULL;
    }
    Cand *cands = NULL;
    Slot *slots = NULL;
    Py_ssize_t filled = 0;
    PyObject *rs = PySequence_Fast(rows, "rows must be a sequence");
    PyObject *ps = rs ? PySequence_Fast(prob, "prob must be a sequence") : NULL;
    PyObject *as = ps ? PySequence_Fast(alias, "alias must be a sequence") : NULL;
    if (as == NULL) goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(rs);
    if (PySequence_Fast_GET_SIZE(ps) != n || PySequence_Fast_GET_SIZE(as) != n) {
        PyErr_SetString(PyExc_ValueError, "rows, prob and alias differ in length");
        goto fail;
    }
    /* Built aside and installed at the end: the conversions below may run Python code. */
    cands = PyMem_Calloc(n ? n : 1, sizeof(Cand));
    slots = PyMem_Calloc(n ? n : 1, sizeof(Slot));
    if (!cands || !slots) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *load, *id, *frag, *idenc, *limit;
        double weight;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(rs, i), "OUSSdO", &load, &id, &frag, &idenc,
                              &weight, &limit))
            goto fail;
        Cand *c = &cands[i];
        Py_INCREF(load); c->load = load;
        Py_INCREF(id); c->id = id;
        Py_INCREF(frag); c->frag = frag;
        Py_INCREF(idenc); c->idenc = idenc;
        filled = i + 1;
        c->weight = weight;
        c->limit = limit == Py_None ? -1 : PyLong_AsLongLong(limit);
        if (c->limit == -1 && PyErr_Occurred()) goto fail;
        slots[i].prob = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(ps, i));
        slots[i].alias = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(as, i));
        if (PyErr_Occurred()) goto fail;
        if (slots[i].alias < 0 || slots[i].alias >= n || PyBytes_GET_SIZE(idenc) > 256) {
            PyErr_SetString(PyExc_ValueError, "bad alias index or encoded id");
            goto fail;
        }
    }
    Py_DECREF(rs); Py_DECREF(ps); Py_DECREF(as);
    clear_pool(self);
    self->cands = cands;
    self->slots = slots;
    self->n = n;
    self->policy = policy;
    Py_RETURN_NONE;
fail:
    Py_XDECREF(rs); Py_XDECREF(ps); Py_XDECREF(as);
    free_cands(cands, slots, filled);
    return NULL;
}

static PyObject *FD_set_date(FastDispatch *self, PyObject *line) {
    if (!PyBytes_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "date line must be bytes");
        return NULL;
    }
    Py_INCREF(line);
    Py_XSETREF(self->date_line, line);
    Py_RETURN_NONE;
}

static int ready(FastDispatch *self) {
    return self->policy != POLICY_OFF && self->rng != NULL && self->stats != NULL;
}

PyDoc_STRVAR(request_doc,
"request(data) -> (answer, close) or None\n--\n\n"
"When data is exactly one complete plain GET /v1/dispatch?client_id=X request,\n"
"the whole HTTP answer and whether to close after it; None leaves it to Python.");

static PyObject *FD_request(FastDispatch *self, PyObject *data) {
    if (!PyBytes_Check(data) || !ready(self)) Py_RETURN_NONE;
    struct timespec t0; /* the ticket's issue time (wall clock) and the start of the answer-time measurement */
    clock_gettime(CLOCK_REALTIME, &t0);
    const char *cid;
    Py_ssize_t cid_len;
    int close;
    if (!recognize(self, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &cid, &cid_len, &close))
        Py_RETURN_NONE;
    PyObject *answer = build(self, cid, cid_len, close ? 2 : 1, &t0);
    if (answer == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    observe(self, elapsed(&t0));
    PyObject *out = PyTuple_Pack(2, answer, close ? Py_True : Py_False);
    Py_DECREF(answer);
    return out;
}

PyDoc_STRVAR(body_doc,
"body(client_id) -> bytes or None\n--\n\n"
"The JSON dispatch answer for an already validated client_id (bytes, UTF-8);\n"
"None when no gateway can take it or the snapshot is not ours.");

static PyObject *FD_body(FastDispatch *self, PyObject *cid) {
    if (!PyBytes_Check(cid)) {
        PyErr_SetString(PyExc_TypeError, "client_id must be bytes");
        return NULL;
    }
    if (PyBytes_GET_SIZE(cid) > 255 || !ready(self)) Py_RETURN_NONE;
    struct timespec now = {0, 0};
    if (self->clock == NULL) clock_gettime(CLOCK_REALTIME, &now);
    PyObject *answer = build(self, PyBytes_AS_STRING(cid), PyBytes_GET_SIZE(cid), 0, &now);
    if (answer == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    return answer;
}

static PyObject *FD_latency(FastDispatch *self, PyObject *unused) {
    PyObject *counts = PyTuple_New(self->nbounds + 1);
    if (counts == NULL) return NULL;
    for (int i = 0; i <= self->nbounds; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(self->lat_counts[i]);
        if (v == NULL) { Py_DECREF(counts); return NULL; }
        PyTuple_SET_ITEM(counts, i, v);
    }
    return Py_BuildValue("(Nd)", counts, self->lat_sum);
}

static PyObject *FD_get_active(FastDispatch *self, void *closure) {
    return PyBool_FromLong(ready(self) && self->n > 0);
}

static PyObject *FD_configure(FastDispatch *self, PyObject *args, PyObject *kw) {
    if (FD_init(self, args, kw) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef FD_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))FD_configure, METH_VARARGS | METH_KEYWORDS,
     "configure(...): the constructor's arguments again (a config reload)."},
    {"set_pool", (PyCFunction)FD_set_pool, METH_VARARGS, set_pool_doc},
    {"set_date", (PyCFunction)FD_set_date, METH_O, "set_date(line): the date header line for answers."},
    {"request", (PyCFunction)FD_request, METH_O, request_doc},
    {"body", (PyCFunction)FD_body, METH_O, body_doc},
    {"latency", (PyCFunction)FD_latency, METH_NOARGS,
     "latency() -> (counts per bucket then +Inf, sum of seconds) of the answers request() built."},
    {NULL},
};

static PyGetSetDef FD_getset[] = {
    {"active", (getter)FD_get_active, NULL, "True while a p2c or random snapshot is installed.", NULL},
    {NULL},
};

static PyTypeObject FastDispatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tcpdispatch._speedups.FastDispatch",
    .tp_basicsize = sizeof(FastDispatch),
    .tp_weaklistoffset = offsetof(FastDispatch, weakrefs),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The dispatch hot path in C; see tcpdispatch.dispatcher.fastpath.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FD_init,
    .tp_dealloc = (destructor)FD_dealloc,
    .tp_traverse = (traverseproc)FD_traverse,
    .tp_clear = (inquiry)FD_clear,
    .tp_methods = FD_methods,
    .tp_getset = FD_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tcpdispatch._speedups", "C accelerator for the dispatch hot path.", -1, NULL,
};

static int add_type(PyObject *m, PyTypeObject *type, const char *name) {
    if (PyType_Ready(type) < 0) return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__speedups(void) {
    init_tables();
    if (!(one = PyLong_FromLong(1))) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (add_type(m, &FastDispatchType, "FastDispatch") < 0 || add_type(m, &SplitMixType, "SplitMix64") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
