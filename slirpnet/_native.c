/* slirpnet._native: the per-frame work that is too slow in the interpreter.
 *
 * Every function has a pure-Python twin that gives the same result and raises
 * the same exception type (slirpnet.wire.checksum.ones_sum,
 * slirpnet.wire.tcpframe, slirpnet.wire.tcpin, slirpnet.dgramio); tests/test_native_*.py prove
 * it, tests/fuzz/atheris_native.py fuzzes it and tests/test_native_asan.py runs
 * it under AddressSanitizer.  Guest bytes pass through here, so every length
 * is checked before it is used and every allocation failure is handled.
 *
 * Only the CPython API and libc: no global state, the GIL released around
 * system calls only (never while a Python object is touched).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#define MASK32 0xFFFFFFFFu
#define MAX_FLAGS 0xFFFu     /* the 12 bits beside the data offset (RFC 9293 §3.1) */
#define MAX_OPTIONS 40       /* a 4-bit data offset counts at most 60 header bytes */
#define IP_LIMIT 0xFFFFu     /* IPv4 total length, IPv6 payload length (no jumbograms) */
#define TTL 64
#define PROTO_TCP 6
#define SEND_BATCH 64               /* datagrams per sendmmsg */
#define RECV_BATCH 64               /* datagrams per recvmmsg at most */
#define RECV_SCRATCH ((size_t)960 << 10) /* bytes received per recvmmsg */

/* ---- the Internet checksum (RFC 1071) ---------------------------------- */

static inline uint64_t
load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v); /* any alignment */
    return v;
}

static inline uint64_t
fold32(uint64_t x)
{
    return (x >> 32) + (x & MASK32);
}

/* End-around carry down to 16 bits: congruent modulo 0xFFFF, and 0 only for 0. */
static inline unsigned
fold16(uint64_t x)
{
    while (x >> 16) {
        x = (x >> 16) + (x & 0xFFFF);
    }
    return (unsigned)x;
}

/* The ones'-complement sum of p[0..n) read as big-endian 16-bit words, an odd
 * last byte being the high half of a zero-padded word, folded to 16 bits: 0
 * only when every byte is 0.
 *
 * RFC 1071 §2(B): the sum is independent of byte order, so the words are
 * added in host order, 64 bits at a time (2**64 ≡ 1 modulo 0xFFFF, so a
 * 64-bit word is congruent to the sum of its four), and the result is swapped
 * once at the end. */
static unsigned
sum16(const unsigned char *p, size_t n)
{
    uint64_t sum = 0, carries = 0;
    size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    /* 32 bytes a step as an add-with-carry chain (RFC 1071 §4.1's loop, as Linux's
     * csum_partial does it); the carry out of each step is counted apart. */
    for (; i + 32 <= n; i += 32) {
        uint64_t carry;
        __asm__("addq 0(%[q]), %[s]\n\t"
                "adcq 8(%[q]), %[s]\n\t"
                "adcq 16(%[q]), %[s]\n\t"
                "adcq 24(%[q]), %[s]\n\t"
                "movl $0, %k[c]\n\t"
                "adcl $0, %k[c]"
                : [s] "+&r"(sum), [c] "=&r"(carry)
                : [q] "r"(p + i)
                : "cc", "memory");
        carries += carry;
    }
#endif
    /* 64-bit words into a 64-bit sum, its carries counted apart:
     * sum + carries * 2**64 ≡ sum + carries modulo 0xFFFF. */
    for (; i + 8 <= n; i += 8) {
        uint64_t w = load64(p + i);
        sum += w;
        carries += sum < w;
    }
    if (i < n) {
        /* The tail, zero-padded: word pairing is kept since i is even. */
        unsigned char tail[8] = {0};
        memcpy(tail, p + i, n - i);
        uint64_t w = load64(tail);
        sum += w;
        carries += sum < w;
    }
    uint64_t total = fold32(fold32(sum) + fold32(carries));
    unsigned s = fold16(total);
#if !PY_BIG_ENDIAN
    s = ((s & 0xFF) << 8) | (s >> 8);
#endif
    return s;
}

/* ---- arguments --------------------------------------------------------- */

/* An int in 0..max, else TypeError (not an int) or OverflowError (out of range). */
static int
get_uint(PyObject *obj, unsigned long long max, const char *name, unsigned long long *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        v = max + 1; /* negative or beyond 64 bits */
    }
    if (v > max) {
        PyErr_Format(PyExc_OverflowError, "%s is out of range 0..%llu", name, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int
get_u32(PyObject *obj, const char *name, uint32_t *out)
{
    unsigned long long v;
    if (get_uint(obj, MASK32, name, &v) < 0) {
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int
get_u16(PyObject *obj, unsigned long long max, const char *name, unsigned *out)
{
    unsigned long long v;
    if (get_uint(obj, max, name, &v) < 0) {
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* A positive segment size; one beyond Py_ssize_t is as good as Py_ssize_t's max. */
static int
get_mss(PyObject *obj, Py_ssize_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "mss must be an int, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && v < 1)) {
        PyErr_SetString(PyExc_ValueError, "mss must be at least 1");
        return -1;
    }
    *out = (overflow > 0 || v > PY_SSIZE_T_MAX) ? PY_SSIZE_T_MAX : (Py_ssize_t)v;
    return 0;
}

static int
check_nargs(const char *func, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd positional arguments (%zd given)",
                     func, expected, nargs);
        return -1;
    }
    return 0;
}

/* ---- ones_sum ---------------------------------------------------------- */

PyDoc_STRVAR(ones_sum_doc,
"ones_sum(data, start=0)\n--\n\n"
"The 16-bit ones'-complement sum of data (zero-padded to even length) plus\n"
"start, a non-negative int: 0 only when both are all zero, else 1..0xFFFF.");

static PyObject *
ones_sum(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs,
         PyObject *kwnames)
{
    PyObject *data = NULL, *start = NULL;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "ones_sum() takes at most 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (nargs > 0) {
        data = args[0];
    }
    if (nargs > 1) {
        start = args[1];
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot;
        if (PyUnicode_CompareWithASCIIString(name, "data") == 0) {
            slot = &data;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "start") == 0) {
            slot = &start;
        }
        else {
            PyErr_Format(PyExc_TypeError, "ones_sum() got an unexpected keyword argument '%U'",
                         name);
            return NULL;
        }
        if (*slot != NULL) {
            PyErr_Format(PyExc_TypeError, "ones_sum() got multiple values for argument '%U'",
                         name);
            return NULL;
        }
        *slot = args[nargs + i];
    }
    if (data == NULL) {
        PyErr_SetString(PyExc_TypeError, "ones_sum() missing required argument 'data'");
        return NULL;
    }

    /* start reduced exactly: as a uint64 when it fits, else modulo 0xFFFF. */
    uint64_t small = 0;
    unsigned long big = 0;
    int is_big = 0;
    if (start != NULL) {
        if (!PyLong_Check(start)) {
            PyErr_Format(PyExc_TypeError, "start must be an int, not %.100s",
                         Py_TYPE(start)->tp_name);
            return NULL;
        }
        small = PyLong_AsUnsignedLongLong(start);
        if (small == (uint64_t)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return NULL;
            }
            PyErr_Clear();
            PyObject *zero = PyLong_FromLong(0);
            if (zero == NULL) {
                return NULL;
            }
            int negative = PyObject_RichCompareBool(start, zero, Py_LT);
            Py_DECREF(zero);
            if (negative < 0) {
                return NULL;
            }
            if (negative) {
                PyErr_SetString(PyExc_ValueError, "start must not be negative");
                return NULL;
            }
            PyObject *modulus = PyLong_FromLong(0xFFFF);
            if (modulus == NULL) {
                return NULL;
            }
            PyObject *rest = PyNumber_Remainder(start, modulus);
            Py_DECREF(modulus);
            if (rest == NULL) {
                return NULL;
            }
            big = PyLong_AsUnsignedLong(rest); /* 0..0xFFFE */
            Py_DECREF(rest);
            if (big == (unsigned long)-1 && PyErr_Occurred()) {
                return NULL;
            }
            is_big = 1; /* beyond 64 bits, so not zero */
        }
    }

    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    unsigned s = sum16((const unsigned char *)view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (is_big) {
        s = fold16((uint64_t)s + big);
        if (s == 0) {
            s = 0xFFFF; /* congruent to 0 but not all zero: negative zero */
        }
    }
    else {
        s = fold16(fold32(small) + s);
    }
    return PyLong_FromUnsignedLong(s);
}

/* ---- TCP frames -------------------------------------------------------- */

typedef struct {
    unsigned sport, dport, flags, window, urgent;
    uint32_t seq, ack;
} TcpFields;

static inline void
put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void
put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline void
copy(unsigned char *to, const void *from, size_t n)
{
    if (n) { /* an empty buffer's pointer may be NULL */
        memcpy(to, from, n);
    }
}

/* The TCP header, options and payload at tcp, the checksum over them and the
 * pseudo-header whose sum is pseudo (RFC 9293 §3.1). */
static void
write_tcp(unsigned char *tcp, const TcpFields *f, const Py_buffer *options,
          const unsigned char *payload, size_t payload_len, uint64_t pseudo)
{
    size_t header_len = 20 + (size_t)options->len;
    put16(tcp, f->sport);
    put16(tcp + 2, f->dport);
    put32(tcp + 4, f->seq);
    put32(tcp + 8, f->ack);
    put16(tcp + 12, (unsigned)(header_len / 4) << 12 | f->flags);
    put16(tcp + 14, f->window);
    put16(tcp + 16, 0);
    put16(tcp + 18, f->urgent);
    copy(tcp + 20, options->buf, (size_t)options->len);
    copy(tcp + header_len, payload, payload_len);
    unsigned s = fold16(fold32(pseudo) + sum16(tcp, header_len + payload_len));
    put16(tcp + 16, ~s & 0xFFFF);
}

typedef struct {
    Py_buffer head, options;
    int v6;
    uint32_t src4, dst4;
    const unsigned char *src6, *dst6;
    unsigned ident;
    TcpFields f;
} Frame;

/* A new bytes object: head, an IPv4 or IPv6 header, the TCP segment. */
static PyObject *
build(const Frame *fr, const TcpFields *f, unsigned ident, const unsigned char *payload,
      size_t payload_len)
{
    size_t head_len = (size_t)fr->head.len;
    size_t tcp_len = 20 + (size_t)fr->options.len + payload_len;
    size_t ip_len = fr->v6 ? 40 : 20;
    PyObject *frame = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(head_len + ip_len + tcp_len));
    if (frame == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(frame);
    copy(out, fr->head.buf, head_len);
    unsigned char *ip = out + head_len;
    uint64_t pseudo;
    if (fr->v6) {
        /* RFC 8200 §3: version 6, traffic class 0, flow label 0. */
        put32(ip, 0x60000000u);
        put16(ip + 4, (unsigned)tcp_len);
        ip[6] = PROTO_TCP;
        ip[7] = TTL;
        memcpy(ip + 8, fr->src6, 16);
        memcpy(ip + 24, fr->dst6, 16);
        /* RFC 8200 §8.1: addresses, upper-layer length, next header. */
        pseudo = (uint64_t)sum16(ip + 8, 32) + tcp_len + PROTO_TCP;
    }
    else {
        /* RFC 791 §3.1: version 4, IHL 5, TOS 0, not fragmented. */
        ip[0] = 0x45;
        ip[1] = 0;
        put16(ip + 2, (unsigned)(20 + tcp_len));
        put16(ip + 4, ident);
        put16(ip + 6, 0);
        ip[8] = TTL;
        ip[9] = PROTO_TCP;
        put16(ip + 10, 0);
        put32(ip + 12, fr->src4);
        put32(ip + 16, fr->dst4);
        put16(ip + 10, ~sum16(ip, 20) & 0xFFFF);
        pseudo = (uint64_t)fr->src4 + fr->dst4 + PROTO_TCP + tcp_len;
    }
    write_tcp(ip + ip_len, f, &fr->options, payload, payload_len, pseudo);
    return frame;
}

static void
frame_release(Frame *fr)
{
    if (fr->head.obj != NULL) {
        PyBuffer_Release(&fr->head);
    }
    if (fr->options.obj != NULL) {
        PyBuffer_Release(&fr->options);
    }
}

/* The shared arguments after the integers, in the twins' order: the IPv6
 * addresses, the options, then the link header. */
static int
frame_buffers(Frame *fr, PyObject *head, PyObject *src6, PyObject *dst6, PyObject *options,
              Py_buffer *addresses)
{
    if (fr->v6) {
        if (PyObject_GetBuffer(src6, &addresses[0], PyBUF_SIMPLE) < 0) {
            return -1;
        }
        if (PyObject_GetBuffer(dst6, &addresses[1], PyBUF_SIMPLE) < 0) {
            return -1;
        }
        if (addresses[0].len != 16 || addresses[1].len != 16) {
            PyErr_SetString(PyExc_ValueError, "an IPv6 address is 16 bytes");
            return -1;
        }
        fr->src6 = addresses[0].buf;
        fr->dst6 = addresses[1].buf;
    }
    if (PyObject_GetBuffer(options, &fr->options, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (fr->options.len > MAX_OPTIONS || fr->options.len % 4) {
        PyErr_Format(PyExc_ValueError,
                     "TCP options must be a multiple of 4 bytes, at most %d, not %zd",
                     MAX_OPTIONS, fr->options.len);
        return -1;
    }
    return PyObject_GetBuffer(head, &fr->head, PyBUF_SIMPLE);
}

static int
check_length(const Frame *fr, size_t payload_len)
{
    size_t length = (fr->v6 ? 0 : 20) + 20 + (size_t)fr->options.len;
    if (payload_len > IP_LIMIT - length) {
        PyErr_Format(PyExc_ValueError, "a payload of %zu bytes does not fit one IP packet",
                     payload_len);
        return -1;
    }
    return 0;
}

static int
tcp_ints(PyObject *const *args, TcpFields *f)
{
    if (get_u16(args[0], 0xFFFF, "sport", &f->sport) < 0 ||
        get_u16(args[1], 0xFFFF, "dport", &f->dport) < 0 ||
        get_u32(args[2], "seq", &f->seq) < 0 || get_u32(args[3], "ack", &f->ack) < 0 ||
        get_u16(args[4], MAX_FLAGS, "flags", &f->flags) < 0 ||
        get_u16(args[5], 0xFFFF, "window", &f->window) < 0) {
        return -1;
    }
    return 0;
}

/* tcp_frame and tcp6_frame: args[first] is sport. */
static PyObject *
one_frame(PyObject *const *args, Frame *fr, Py_ssize_t first)
{
    PyObject *result = NULL;
    Py_buffer addresses[2] = {{0}, {0}};
    Py_buffer payload = {0};
    if (tcp_ints(args + first, &fr->f) < 0 ||
        get_u16(args[first + 6], 0xFFFF, "urgent", &fr->f.urgent) < 0) {
        goto done;
    }
    if (frame_buffers(fr, args[0], args[1], args[2], args[first + 7], addresses) < 0) {
        goto done;
    }
    if (PyObject_GetBuffer(args[first + 8], &payload, PyBUF_SIMPLE) < 0) {
        goto done;
    }
    if (check_length(fr, (size_t)payload.len) < 0) {
        goto done;
    }
    result = build(fr, &fr->f, fr->ident, payload.buf, (size_t)payload.len);
done:
    if (payload.obj != NULL) {
        PyBuffer_Release(&payload);
    }
    for (int i = 0; i < 2; i++) {
        if (addresses[i].obj != NULL) {
            PyBuffer_Release(&addresses[i]);
        }
    }
    frame_release(fr);
    return result;
}

PyDoc_STRVAR(tcp_frame_doc,
"tcp_frame(head, src, dst, ident, sport, dport, seq, ack, flags, window, urgent, options, payload, /)\n--\n\n"
"head, an IPv4 header (TTL 64, no options, not fragmented) and a TCP segment,\n"
"both checksums filled in.");

static PyObject *
tcp_frame(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Frame fr = {0};
    if (check_nargs("tcp_frame", nargs, 13) < 0 || get_u32(args[1], "src", &fr.src4) < 0 ||
        get_u32(args[2], "dst", &fr.dst4) < 0 ||
        get_u16(args[3], 0xFFFF, "ident", &fr.ident) < 0) {
        return NULL;
    }
    return one_frame(args, &fr, 4);
}

PyDoc_STRVAR(tcp6_frame_doc,
"tcp6_frame(head, src, dst, sport, dport, seq, ack, flags, window, urgent, options, payload, /)\n--\n\n"
"head, an IPv6 header (hop limit 64, src and dst 16 bytes each) and a TCP\n"
"segment, its checksum filled in.");

static PyObject *
tcp6_frame(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Frame fr = {0};
    fr.v6 = 1;
    if (check_nargs("tcp6_frame", nargs, 12) < 0) {
        return NULL;
    }
    return one_frame(args, &fr, 3);
}

/* tcp_frames and tcp6_frames: args[first] is sport; no urgent argument. */
static PyObject *
many_frames(PyObject *const *args, Frame *fr, Py_ssize_t first)
{
    PyObject *result = NULL;
    Py_buffer addresses[2] = {{0}, {0}};
    Py_buffer payload = {0};
    Py_ssize_t mss;
    unsigned last_flags;
    if (tcp_ints(args + first, &fr->f) < 0 || get_mss(args[first + 8], &mss) < 0 ||
        get_u16(args[first + 9], MAX_FLAGS, "last_flags", &last_flags) < 0) {
        goto done;
    }
    fr->f.urgent = 0;
    if (frame_buffers(fr, args[0], args[1], args[2], args[first + 6], addresses) < 0) {
        goto done;
    }
    if (PyObject_GetBuffer(args[first + 7], &payload, PyBUF_SIMPLE) < 0) {
        goto done;
    }
    size_t total = (size_t)payload.len, step = (size_t)mss;
    if (check_length(fr, total < step ? total : step) < 0) {
        goto done;
    }
    size_t count = total == 0 ? 1 : total / step + (total % step != 0);
    if (count > (size_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyList_New((Py_ssize_t)count);
    if (result == NULL) {
        goto done;
    }
    TcpFields f = fr->f;
    size_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        size_t piece = total - offset < step ? total - offset : step;
        f.seq = (uint32_t)(fr->f.seq + (uint64_t)offset);
        f.flags = i + 1 == count ? (fr->f.flags | last_flags) : fr->f.flags;
        PyObject *frame = build(fr, &f, (unsigned)((fr->ident + i) & 0xFFFF),
                                (const unsigned char *)payload.buf + offset, piece);
        if (frame == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)i, frame);
        offset += piece;
    }
done:
    if (payload.obj != NULL) {
        PyBuffer_Release(&payload);
    }
    for (int i = 0; i < 2; i++) {
        if (addresses[i].obj != NULL) {
            PyBuffer_Release(&addresses[i]);
        }
    }
    frame_release(fr);
    return result;
}

PyDoc_STRVAR(tcp_frames_doc,
"tcp_frames(head, src, dst, ident, sport, dport, seq, ack, flags, window, options, payload, mss, last_flags, /)\n--\n\n"
"The payload cut into frames of mss bytes as tcp_frame builds them: segment i\n"
"at seq + i*mss with IP ident + i, the last one also carrying last_flags.");

static PyObject *
tcp_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Frame fr = {0};
    if (check_nargs("tcp_frames", nargs, 14) < 0 || get_u32(args[1], "src", &fr.src4) < 0 ||
        get_u32(args[2], "dst", &fr.dst4) < 0 ||
        get_u16(args[3], 0xFFFF, "ident", &fr.ident) < 0) {
        return NULL;
    }
    return many_frames(args, &fr, 4);
}

PyDoc_STRVAR(tcp6_frames_doc,
"tcp6_frames(head, src, dst, sport, dport, seq, ack, flags, window, options, payload, mss, last_flags, /)\n--\n\n"
"tcp_frames for IPv6.");

static PyObject *
tcp6_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Frame fr = {0};
    fr.v6 = 1;
    if (check_nargs("tcp6_frames", nargs, 13) < 0) {
        return NULL;
    }
    return many_frames(args, &fr, 3);
}

/* ---- batched datagram I/O ---------------------------------------------- */

static void
release_all(Py_buffer *views, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyBuffer_Release(&views[i]);
    }
}

PyDoc_STRVAR(send_frames_doc,
"send_frames(sock, frames, /)\n--\n\n"
"Send each frame as one datagram, in order, with sendmmsg; return how many went\n"
"out.  Stops at the first the kernel will not take now; another error raises\n"
"OSError if nothing went out yet.");

static PyObject *
send_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("send_frames", nargs, 2) < 0) {
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) {
        return NULL;
    }
    PyObject *frames = PySequence_Fast(args[1], "frames must be a sequence");
    if (frames == NULL) {
        return NULL;
    }
    Py_buffer views[SEND_BATCH];
    struct iovec iov[SEND_BATCH];
    struct mmsghdr msgs[SEND_BATCH];
    Py_ssize_t sent = 0;
    PyObject *result = NULL;
    for (;;) {
        /* Read the size again each time: the GIL was released in between. */
        Py_ssize_t size = PySequence_Fast_GET_SIZE(frames);
        if (sent >= size) {
            break;
        }
        Py_ssize_t k = 0;
        int bad = 0;
        for (; k < SEND_BATCH && sent + k < size; k++) {
            PyObject *item = PySequence_Fast_GET_ITEM(frames, sent + k);
            if (PyObject_GetBuffer(item, &views[k], PyBUF_SIMPLE) < 0) {
                bad = 1;
                break;
            }
            iov[k].iov_base = views[k].buf;
            iov[k].iov_len = (size_t)views[k].len;
            memset(&msgs[k], 0, sizeof msgs[k]);
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        if (k == 0) {
            goto done; /* the bad item's error is set, as the twin's send raises */
        }
        /* The frames before a bad one go out first, as the twin sends them. */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        int r, err;
        do {
            Py_BEGIN_ALLOW_THREADS
            r = sendmmsg(fd, msgs, (unsigned)k, MSG_DONTWAIT);
            err = errno;
            Py_END_ALLOW_THREADS
        } while (r < 0 && err == EINTR && PyErr_CheckSignals() == 0);
        release_all(views, k);
        if (r < 0 && err == EINTR) {
            /* A signal handler raised: that exception wins, as in sock.send. */
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            goto done;
        }
        if (r < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            if (err == EAGAIN || err == EWOULDBLOCK || sent > 0) {
                break;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        sent += r;
        if (r < k) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            break;
        }
        if (bad) {
            PyErr_Restore(type, value, traceback);
            goto done;
        }
    }
    result = PyLong_FromSsize_t(sent);
done:
    Py_DECREF(frames);
    return result;
}

/* The sender's address exactly as CPython 3.11's socket module gives it
 * (Modules/socketmodule.c, makesockaddr). */
static PyObject *
make_address(const struct sockaddr_storage *storage, socklen_t len)
{
    if (len == 0) {
        Py_RETURN_NONE; /* an unbound AF_UNIX sender */
    }
    const struct sockaddr *addr = (const struct sockaddr *)storage;
    if (len > (socklen_t)sizeof *storage) {
        len = sizeof *storage; /* the kernel reports the full length when it truncates */
    }
    char host[INET6_ADDRSTRLEN];
    switch (addr->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const struct sockaddr_in *)storage;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)storage;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port),
                             (unsigned)ntohl(a->sin6_flowinfo), (unsigned)a->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *a = (const struct sockaddr_un *)storage;
        size_t start = offsetof(struct sockaddr_un, sun_path);
        size_t path_len = (size_t)len > start ? (size_t)len - start : 0;
        if (path_len > sizeof a->sun_path) {
            path_len = sizeof a->sun_path;
        }
        if (path_len > 0 && a->sun_path[0] == 0) { /* Linux's abstract namespace */
            return PyBytes_FromStringAndSize(a->sun_path, (Py_ssize_t)path_len);
        }
        /* A path ends at its NUL, or at the address's end (CPython reads on). */
        return PyUnicode_DecodeFSDefaultAndSize(a->sun_path,
                                                (Py_ssize_t)strnlen(a->sun_path, path_len));
    }
    default: /* CPython's fallback for families it does not know */
        return Py_BuildValue("(iy#)", (int)addr->sa_family, addr->sa_data,
                             (Py_ssize_t)sizeof addr->sa_data);
    }
}

PyDoc_STRVAR(recv_frames_doc,
"recv_frames(sock, count, size, /)\n--\n\n"
"Up to count datagrams waiting on the socket (recvmmsg, MSG_DONTWAIT), each as\n"
"sock.recvfrom(size) gives it; [] when none waits.");

static PyObject *
recv_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("recv_frames", nargs, 3) < 0) {
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) {
        return NULL;
    }
    Py_ssize_t count, size;
    for (int i = 1; i < 3; i++) {
        if (!PyLong_Check(args[i])) {
            PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s",
                         i == 1 ? "count" : "size", Py_TYPE(args[i])->tp_name);
            return NULL;
        }
    }
    int overflow;
    long long c = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (c == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow < 0 || (overflow == 0 && c < 0)) {
        PyErr_SetString(PyExc_ValueError, "negative count");
        return NULL;
    }
    count = (overflow > 0 || c > PY_SSIZE_T_MAX) ? PY_SSIZE_T_MAX : (Py_ssize_t)c;
    long long z = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (z == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow > 0 || z > PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "size does not fit a C ssize_t");
        return NULL;
    }
    size = (Py_ssize_t)z;
    if (overflow < 0 || size < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recvfrom");
        return NULL;
    }
    PyObject *result = PyList_New(0);
    if (result == NULL || count == 0) {
        return result;
    }
    /* The datagrams land in one scratch buffer of batch slots of size bytes, and
     * are copied out at their lengths: one allocation per call, small enough to
     * stay in the heap (below the mmap threshold shell/allocator.py sets), where
     * its pages are reused rather than faulted in anew. */
    size_t slot = (size_t)size;
    size_t batch = slot ? RECV_SCRATCH / slot : RECV_BATCH;
    batch = batch < 1 ? 1 : batch > RECV_BATCH ? RECV_BATCH : batch;
    if ((size_t)count < batch) {
        batch = (size_t)count;
    }
    char *scratch = PyMem_RawMalloc(slot ? batch * slot : 1);
    if (scratch == NULL) {
        Py_DECREF(result);
        return PyErr_NoMemory();
    }
    struct mmsghdr msgs[RECV_BATCH];
    struct iovec iov[RECV_BATCH];
    struct sockaddr_storage names[RECV_BATCH];
    Py_ssize_t got = 0;
    while (got < count) {
        size_t want = (size_t)(count - got) < batch ? (size_t)(count - got) : batch;
        for (size_t i = 0; i < want; i++) {
            iov[i].iov_base = scratch + i * slot;
            iov[i].iov_len = slot;
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_name = &names[i];
            msgs[i].msg_hdr.msg_namelen = sizeof names[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r, err;
        do {
            Py_BEGIN_ALLOW_THREADS
            r = recvmmsg(fd, msgs, (unsigned)want, MSG_DONTWAIT, NULL);
            err = errno;
            Py_END_ALLOW_THREADS
        } while (r < 0 && err == EINTR && PyErr_CheckSignals() == 0);
        if (r < 0) {
            if (err == EINTR) {
                goto fail; /* a signal handler raised */
            }
            if (err == EAGAIN || err == EWOULDBLOCK || got > 0) {
                break; /* recvmmsg keeps a later error for the next call */
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        for (int i = 0; i < r; i++) {
            size_t len = msgs[i].msg_len < slot ? msgs[i].msg_len : slot;
            PyObject *data = PyBytes_FromStringAndSize(scratch + (size_t)i * slot,
                                                       (Py_ssize_t)len);
            PyObject *address = data == NULL
                ? NULL : make_address(&names[i], msgs[i].msg_hdr.msg_namelen);
            PyObject *pair = address == NULL ? NULL : PyTuple_New(2);
            if (pair == NULL) {
                Py_XDECREF(data);
                Py_XDECREF(address);
                goto fail;
            }
            PyTuple_SET_ITEM(pair, 0, data);
            PyTuple_SET_ITEM(pair, 1, address);
            int appended = PyList_Append(result, pair);
            Py_DECREF(pair);
            if (appended < 0) {
                goto fail;
            }
        }
        got += r;
        if ((size_t)r < want) {
            break; /* the queue is empty */
        }
    }
    PyMem_RawFree(scratch);
    return result;
fail:
    PyMem_RawFree(scratch);
    Py_DECREF(result);
    return NULL;
}

/* ---- tcp_in: a guest's TCP frame read in one step ---------------------- */

#define ETHERNET_LEN 14
#define TCP_AT (ETHERNET_LEN + 20) /* an IPv4 header without options */

static inline unsigned
get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static inline uint32_t
get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The fields of a valid segment (see tcp_in_doc), or Py_None; NULL on an error. */
static PyObject *
tcp_in_fields(const unsigned char *f, size_t n, const Py_buffer *mac)
{
    if (n < TCP_AT + 20 || mac->len != 6 || memcmp(f, mac->buf, 6) != 0) {
        Py_RETURN_NONE;
    }
    const unsigned char *ip = f + ETHERNET_LEN;
    size_t end = ETHERNET_LEN + (size_t)get16(ip + 2);
    /* RFC 791 §3.1: IPv4, IHL 5, TCP, neither MF nor an offset (DF alone may be set). */
    if (get16(f + 12) != 0x0800 || ip[0] != 0x45 || ip[9] != PROTO_TCP ||
        (get16(ip + 6) & 0xBFFF) || end < TCP_AT + 20 || end > n) {
        Py_RETURN_NONE;
    }
    /* RFC 1071: the header, checksum included, sums to negative zero. */
    if (sum16(ip, 20) != 0xFFFF) {
        Py_RETURN_NONE;
    }
    uint32_t src = get32(ip + 12), dst = get32(ip + 16);
    size_t tcp_len = end - TCP_AT;
    const unsigned char *tcp = f + TCP_AT;
    uint64_t pseudo = (uint64_t)src + dst + PROTO_TCP + tcp_len; /* RFC 9293 §3.1 */
    if (fold16(fold32(pseudo) + sum16(tcp, tcp_len)) != 0xFFFF) {
        Py_RETURN_NONE;
    }
    unsigned offset_flags = get16(tcp + 12);
    size_t header_len = (size_t)(offset_flags >> 12) * 4;
    if (header_len < 20 || header_len > tcp_len) {
        Py_RETURN_NONE;
    }
    PyObject *fields = PyTuple_New(11);
    if (fields == NULL) {
        return NULL;
    }
    PyObject *items[11] = {
        PyBytes_FromStringAndSize((const char *)f + 6, 6),
        PyLong_FromUnsignedLong(src),
        PyLong_FromUnsignedLong(dst),
        PyLong_FromUnsignedLong(get16(tcp)),
        PyLong_FromUnsignedLong(get16(tcp + 2)),
        PyLong_FromUnsignedLong(get32(tcp + 4)),
        PyLong_FromUnsignedLong(get32(tcp + 8)),
        PyLong_FromUnsignedLong(offset_flags),
        PyLong_FromUnsignedLong(get16(tcp + 14)),
        PyLong_FromUnsignedLong(get16(tcp + 18)),
        PyLong_FromSsize_t((Py_ssize_t)end),
    };
    for (Py_ssize_t i = 0; i < 11; i++) { /* the tuple owns them, NULL or not */
        PyTuple_SET_ITEM(fields, i, items[i]);
    }
    for (Py_ssize_t i = 0; i < 11; i++) {
        if (items[i] == NULL) {
            Py_DECREF(fields);
            return NULL;
        }
    }
    return fields;
}

PyDoc_STRVAR(tcp_in_doc,
"tcp_in(frame, mac, /)\n--\n\n"
"The fields of a valid TCP segment over option-free, unfragmented IPv4 in frame,\n"
"sent to mac: (src_mac, src, dst, sport, dport, seq, ack, offset_flags, window,\n"
"urgent, end), the segment being frame[34:end]; None for any other frame.");

static PyObject *
tcp_in(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("tcp_in", nargs, 2) < 0) {
        return NULL;
    }
    Py_buffer frame, mac;
    if (PyObject_GetBuffer(args[0], &frame, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mac, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&frame);
        return NULL;
    }
    PyObject *result = tcp_in_fields(frame.buf, (size_t)frame.len, &mac);
    PyBuffer_Release(&mac);
    PyBuffer_Release(&frame);
    return result;
}

/* ---- the module -------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"ones_sum", (PyCFunction)(void (*)(void))ones_sum, METH_FASTCALL | METH_KEYWORDS,
     ones_sum_doc},
    {"tcp_frame", (PyCFunction)(void (*)(void))tcp_frame, METH_FASTCALL, tcp_frame_doc},
    {"tcp6_frame", (PyCFunction)(void (*)(void))tcp6_frame, METH_FASTCALL, tcp6_frame_doc},
    {"tcp_frames", (PyCFunction)(void (*)(void))tcp_frames, METH_FASTCALL, tcp_frames_doc},
    {"tcp6_frames", (PyCFunction)(void (*)(void))tcp6_frames, METH_FASTCALL, tcp6_frames_doc},
    {"send_frames", (PyCFunction)(void (*)(void))send_frames, METH_FASTCALL, send_frames_doc},
    {"recv_frames", (PyCFunction)(void (*)(void))recv_frames, METH_FASTCALL, recv_frames_doc},
    {"tcp_in", (PyCFunction)(void (*)(void))tcp_in, METH_FASTCALL, tcp_in_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "slirpnet._native",
    .m_doc = "The per-frame work of slirpnet in C; each function has a pure-Python twin.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&module);
}
