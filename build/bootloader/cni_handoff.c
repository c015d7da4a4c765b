/*
 * SPDX-License-Identifier: Apache-2.0 (this file; it is compiled into PyInstaller's bootloader,
 *   GPL-2.0-or-later with the bootloader exception)
 *
 * cni-bridge: the native hand-off, compiled into PyInstaller's bootloader (build/bootloader/).
 *
 * The same hand-off as cni_bridge/serve/client/handoff.py, done before the bootloader restarts itself,
 * loads libpython and starts the interpreter (~16 ms on 2 CPUs, the "floor"): a call handed to a
 * running `cni-bridge serve` then costs an exec, a connect and the server's work. Protocol and
 * rules are those of cni_bridge/serve/wire.py and handoff.py:
 *
 *   - only a plugin role (argv[0]'s base name), a served verb, a socket (CNI_BRIDGE_SOCKET,
 *     default /run/cni-bridge/serve.sock, empty: never) and a bundle with a build digest;
 *   - cni_bridge_handoff() returns, and the bootloader starts Python as usual, as long as nothing
 *     of the call was sent: no server, a refusal, no answer within 2 s, not a served call; then
 *     it sets CNI_BRIDGE_RUN_HERE, which tells the restarted bootloader and Python's own hook
 *     that this is decided. An environment
 *     that is not UTF-8 is left to Python's hook (its encoding of it is not ours to copy);
 *   - from the first byte of the request on, the call belongs to the server: this process
 *     prints its result and exits with its status, or prints one CNI error (code 11) and exits 1.
 *
 * Frames are a 4-byte big-endian length and a value in Python's marshal format (version 4),
 * of which this file writes and reads only what the protocol uses: tuples, dicts, str, bytes,
 * int and None.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

/* The protocol's constants: each is wire.py's (PLUGIN_ROLES, SERVED_VERBS, HELLO_TIMEOUT for
 * HELLO_TIMEOUT_S, the rest by name); tests/unit/test_serve_wire.py holds them equal. */
#define PROTOCOL 1
#define DEFAULT_SOCKET "/run/cni-bridge/serve.sock"
#define DIGEST_FILE "_internal/cni_bridge_build_digest"
#define MAX_STDIN (16 * 1024 * 1024)
#define MAX_HELLO 4096
#define MAX_FRAME (MAX_STDIN + (4 << 20))
#define HELLO_TIMEOUT_S 2
#define SOCKET_ENV "CNI_BRIDGE_SOCKET"
#define RUN_HERE_ENV "CNI_BRIDGE_RUN_HERE"

static const char *const ROLES[] = {"bridge", "host-local", "portmap", "loopback", NULL};
static const char *const VERBS[] = {"ADD", "DEL", "CHECK", "GC", "STATUS", NULL};

/* ------------------------------------------------------------------ small helpers */

static int in_list(const char *word, const char *const *list)
{
    for (; *list; list++) {
        if (strcmp(word, *list) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Whether s[0..n) is UTF-8 that Python's decoder accepts (no surrogates, no overlongs). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2; cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3; cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4; cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n) {
            return 0;
        }
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return 0;
        }
        i += len;
    }
    return 1;
}

/* ------------------------------------------------------------------ marshal writer */

struct buf {
    unsigned char *data;
    size_t len, cap;
    int failed;
};

static void put(struct buf *b, const void *src, size_t n)
{
    if (b->failed) {
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) {
            cap *= 2;
        }
        unsigned char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
}

static void put_byte(struct buf *b, unsigned char c)
{
    put(b, &c, 1);
}

static void put_i32(struct buf *b, int32_t v)  /* marshal's ints are little-endian */
{
    uint32_t u = (uint32_t)v;
    unsigned char le[4] = {u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF, (u >> 24) & 0xFF};
    put(b, le, 4);
}

static void put_str(struct buf *b, const char *s, size_t n)
{
    put_byte(b, 'u');
    put_i32(b, (int32_t)n);
    put(b, s, n);
}

static void put_cstr(struct buf *b, const char *s)
{
    put_str(b, s, strlen(s));
}

static void put_bytes(struct buf *b, const unsigned char *s, size_t n)
{
    put_byte(b, 's');
    put_i32(b, (int32_t)n);
    put(b, s, n);
}

static void put_int(struct buf *b, int32_t v)
{
    put_byte(b, 'i');
    put_i32(b, v);
}

static void put_tuple(struct buf *b, int32_t n)
{
    put_byte(b, '(');
    put_i32(b, n);
}

/* A frame: the 4-byte big-endian length in front of the value written after `start`. */
static void frame_begin(struct buf *b)
{
    unsigned char zero[4] = {0, 0, 0, 0};
    b->len = 0;
    put(b, zero, 4);
}

static void frame_end(struct buf *b)
{
    uint32_t n = (uint32_t)(b->len - 4);
    if (b->failed) {
        return;
    }
    b->data[0] = n >> 24; b->data[1] = (n >> 16) & 0xFF;
    b->data[2] = (n >> 8) & 0xFF; b->data[3] = n & 0xFF;
}

/* ------------------------------------------------------------------ marshal reader */

/* A decoded value: only the shapes the server sends (tuples of str, int and bytes). */
enum kind { K_NONE, K_STR, K_BYTES, K_INT, K_TUPLE };

struct value {
    enum kind kind;
    const unsigned char *ptr;  /* str / bytes: into the frame */
    size_t len;                /* str / bytes length, tuple size */
    long num;
    struct value *items;       /* tuple */
};

struct reader {
    const unsigned char *p, *end;
    struct value refs[32];     /* objects marshal flagged for back-references */
    int nrefs;
    int depth;
};

static int take(struct reader *r, size_t n, const unsigned char **out)
{
    if ((size_t)(r->end - r->p) < n) {
        return -1;
    }
    *out = r->p;
    r->p += n;
    return 0;
}

static int take_i32(struct reader *r, long *out)
{
    const unsigned char *q;
    if (take(r, 4, &q) < 0) {
        return -1;
    }
    *out = (long)(int32_t)((uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) |
                           ((uint32_t)q[3] << 24));
    return 0;
}

static int read_value(struct reader *r, struct value *v)
{
    const unsigned char *q;
    long n;
    int slot = -1;
    if (take(r, 1, &q) < 0 || r->depth > 4) {
        return -1;
    }
    unsigned char code = q[0] & 0x7F;
    if ((q[0] & 0x80) && r->nrefs < (int)(sizeof(r->refs) / sizeof(r->refs[0]))) {
        slot = r->nrefs++;  /* reserved before a container's items, as marshal does */
    } else if (q[0] & 0x80) {
        return -1;
    }
    memset(v, 0, sizeof(*v));
    switch (code) {
    case 'N':
        v->kind = K_NONE;
        break;
    case 'i':
        v->kind = K_INT;
        if (take_i32(r, &v->num) < 0) {
            return -1;
        }
        break;
    case 'u': case 't': case 'a': case 'A': case 's':
        if (take_i32(r, &n) < 0 || n < 0 || take(r, (size_t)n, &v->ptr) < 0) {
            return -1;
        }
        v->kind = code == 's' ? K_BYTES : K_STR;
        v->len = (size_t)n;
        break;
    case 'z': case 'Z':
        if (take(r, 1, &q) < 0) {
            return -1;
        }
        n = q[0];
        if (take(r, (size_t)n, &v->ptr) < 0) {
            return -1;
        }
        v->kind = K_STR;
        v->len = (size_t)n;
        break;
    case '(': case ')':
        if (code == ')') {
            if (take(r, 1, &q) < 0) {
                return -1;
            }
            n = q[0];
        } else if (take_i32(r, &n) < 0) {
            return -1;
        }
        if (n < 0 || n > 8) {
            return -1;
        }
        v->kind = K_TUPLE;
        v->len = (size_t)n;
        v->items = calloc((size_t)n + 1, sizeof(struct value));
        if (!v->items) {
            return -1;
        }
        r->depth++;
        for (long i = 0; i < n; i++) {
            if (read_value(r, &v->items[i]) < 0) {
                return -1;
            }
        }
        r->depth--;
        break;
    case 'r':
        if (take_i32(r, &n) < 0 || n < 0 || n >= r->nrefs) {
            return -1;
        }
        *v = r->refs[n];
        return 0;
    default:
        return -1;
    }
    if (slot >= 0) {
        r->refs[slot] = *v;
    }
    return 0;
}

static int is_str(const struct value *v, const char *s)
{
    return v->kind == K_STR && v->len == strlen(s) && memcmp(v->ptr, s, v->len) == 0;
}

/* ------------------------------------------------------------------ socket I/O */

static int send_all(int sock, const unsigned char *data, size_t n)
{
    while (n) {
        ssize_t sent = send(sock, data, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        data += sent;
        n -= (size_t)sent;
    }
    return 0;
}

/* The frame in `b`, its first bytes carrying `fds` (SCM_RIGHTS). */
static int send_frame(int sock, const struct buf *b, const int *fds, int nfds)
{
    if (b->failed) {
        return -1;
    }
    if (nfds == 0) {
        return send_all(sock, b->data, b->len);
    }
    char control[CMSG_SPACE(sizeof(int) * 8)];
    struct iovec iov = {b->data, b->len};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    memset(control, 0, sizeof(control));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    ssize_t sent;
    do {
        sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        return -1;
    }
    return send_all(sock, b->data + sent, b->len - (size_t)sent);
}

static int recv_exact(int sock, unsigned char *out, size_t n, const char **why)
{
    while (n) {
        ssize_t got = recv(sock, out, n, 0);
        if (got == 0) {
            *why = "the peer closed the connection";
            return -1;
        }
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            *why = strerror(errno);
            return -1;
        }
        out += got;
        n -= (size_t)got;
    }
    return 0;
}

/* One frame's body (malloc'ed), at most `limit` bytes. */
static unsigned char *recv_frame(int sock, size_t limit, size_t *size, const char **why)
{
    unsigned char header[4];
    if (recv_exact(sock, header, 4, why) < 0) {
        return NULL;
    }
    *size = ((size_t)header[0] << 24) | ((size_t)header[1] << 16) | ((size_t)header[2] << 8) |
            header[3];
    if (*size > limit) {
        *why = "oversized frame";
        return NULL;
    }
    unsigned char *body = malloc(*size ? *size : 1);
    if (!body) {
        *why = "out of memory";
        return NULL;
    }
    if (recv_exact(sock, body, *size, why) < 0) {
        free(body);
        return NULL;
    }
    return body;
}

static void set_timeout(int sock, int seconds)
{
    struct timeval tv = {seconds, 0};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* ------------------------------------------------------------------ the call */

static void write_all_fd(int fd, const unsigned char *data, size_t n)
{
    while (n) {
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            _exit(1);
        }
        data += w;
        n -= (size_t)w;
    }
}

/* The request was sent and no result came: one CNI error (code 11), never a second run. */
static void went_away(const char *why)
{
    struct buf out = {0};
    const char *head = "{\n    \"code\": 11,\n    \"msg\": \"the resident cni-bridge server went away "
                       "during the call; it may or may not have taken effect: try again\",\n"
                       "    \"details\": \"";
    put(&out, head, strlen(head));
    for (const char *c = why; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\'; esc[1] = *c;
            put(&out, esc, 2);
        } else if ((unsigned char)*c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned char)*c);
            put(&out, esc, 6);
        } else {
            put(&out, c, 1);
        }
    }
    put(&out, "\"\n}", 3);
    if (!out.failed) {
        write_all_fd(1, out.data, out.len);
    }
    _exit(1);
}

static int read_digest(char *digest, size_t size)
{
    char exe[PATH_MAX], path[PATH_MAX + sizeof(DIGEST_FILE) + 1];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        return -1;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) {
        return -1;
    }
    *slash = 0;
    snprintf(path, sizeof(path), "%s/%s", exe, DIGEST_FILE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    n = read(fd, digest, size - 1);
    close(fd);
    while (n > 0 && (digest[n - 1] == '\n' || digest[n - 1] == ' ' || digest[n - 1] == '\r')) {
        n--;
    }
    if (n <= 0) {
        return -1;
    }
    digest[n] = 0;
    return valid_utf8((const unsigned char *)digest, (size_t)n) ? 0 : -1;
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
}

/* The caller's network and mount namespaces, root, cwd and stderr (wire.CALL_FDS). */
static int open_call_fds(int fds[5])
{
    const int dir_flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    int n = 0;
    if ((fds[n] = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) < 0) goto fail;
    n++;
    if ((fds[n] = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC)) < 0) goto fail;
    n++;
    if ((fds[n] = open("/", dir_flags)) < 0) goto fail;
    n++;
    if ((fds[n] = open(".", dir_flags)) < 0) goto fail;
    n++;
    struct stat st;
    fds[n] = fstat(2, &st) == 0 ? fcntl(2, F_DUPFD_CLOEXEC, 0) : -1;
    if (fds[n] < 0 && (fds[n] = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0) goto fail;
    return 0;
fail:
    close_fds(fds, n);
    return -1;
}

/* Whether every environment entry (and argv[0]) is UTF-8, so that the server sees exactly
 * the strings Python would have sent. */
static int environment_is_utf8(const char *argv0)
{
    if (!valid_utf8((const unsigned char *)argv0, strlen(argv0))) {
        return 0;
    }
    for (char **e = environ; *e; e++) {
        if (!valid_utf8((const unsigned char *)*e, strlen(*e))) {
            return 0;
        }
    }
    return 1;
}

/* dict(os.environ): entries without '=' are skipped, and the first of duplicate names wins. */
static void put_environ(struct buf *b)
{
    put_byte(b, '{');
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e) {
            continue;
        }
        size_t name_len = (size_t)(eq - *e);
        int seen = 0;
        for (char **prior = environ; prior < e && !seen; prior++) {
            seen = strncmp(*prior, *e, name_len + 1) == 0;
        }
        if (seen) {
            continue;
        }
        put_str(b, *e, name_len);
        put_cstr(b, eq + 1);
    }
    put_byte(b, '0');  /* marshal's end of dict */
}

/* Stdin up to one byte over the dispatcher's limit; NULL with `error` set on a read error. */
static unsigned char *read_stdin(size_t *size, char *error, size_t error_size)
{
    size_t cap = 65536, len = 0, left = (size_t)MAX_STDIN + 1;
    unsigned char *data = malloc(cap);
    if (!data) {
        went_away("out of memory");
    }
    while (left > 0) {
        if (len == cap) {
            cap *= 2;
            unsigned char *grown = realloc(data, cap);
            if (!grown) {
                went_away("out of memory");
            }
            data = grown;
        }
        size_t want = cap - len < left ? cap - len : left;
        ssize_t got = read(0, data + len, want);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            snprintf(error, error_size, "[Errno %d] %s", errno, strerror(errno));
            free(data);
            return NULL;
        }
        if (got == 0) {
            break;
        }
        len += (size_t)got;
        left -= (size_t)got;
    }
    *size = len;
    return data;
}

/* Send the call, wait for its result, print it and exit with its status. Never returns. */
static void hand_over(int sock, const char *argv0)
{
    char stdin_error[256] = "";
    size_t stdin_size = 0;
    unsigned char *stdin_data;
    mode_t mask;
    struct buf b = {0};

    signal(SIGPIPE, SIG_IGN);  /* as in Python: a closed stdout is an error, not a signal */
    stdin_data = read_stdin(&stdin_size, stdin_error, sizeof(stdin_error));
    mask = umask(022);
    umask(mask);

    frame_begin(&b);
    put_tuple(&b, 2);
    put_cstr(&b, "request");
    put_byte(&b, '{');
    put_cstr(&b, "argv0");
    put_cstr(&b, argv0);
    put_cstr(&b, "environ");
    put_environ(&b);
    put_cstr(&b, "stdin");
    if (stdin_data) {
        put_bytes(&b, stdin_data, stdin_size);
    } else {
        put_byte(&b, 'N');
    }
    put_cstr(&b, "stdin_error");
    if (stdin_data) {
        put_byte(&b, 'N');
    } else {
        put_cstr(&b, stdin_error);
    }
    put_cstr(&b, "umask");
    put_int(&b, (int32_t)mask);
    put_byte(&b, '0');
    frame_end(&b);
    free(stdin_data);

    set_timeout(sock, 0);
    if (send_frame(sock, &b, NULL, 0) < 0) {
        went_away(b.failed ? "out of memory" : strerror(errno));
    }
    free(b.data);

    const char *why = "unexpected answer";
    size_t size;
    unsigned char *body = recv_frame(sock, MAX_FRAME, &size, &why);
    if (!body) {
        went_away(why);
    }
    struct reader r = {body, body + size, {{0}}, 0, 0};
    struct value answer;
    if (read_value(&r, &answer) < 0 || answer.kind != K_TUPLE || answer.len != 3 ||
        !is_str(&answer.items[0], "result") || answer.items[1].kind != K_INT ||
        answer.items[2].kind != K_BYTES) {
        went_away("unexpected answer");
    }
    write_all_fd(1, answer.items[2].ptr, answer.items[2].len);
    _exit((int)answer.items[1].num);
}

/* Decided: the call runs in this process. The bootloader restarts itself (running main() again)
 * and then starts Python, whose hook (handoff.py) would decide again: this tells both that it
 * is settled. The run-time hook removes it from the environment before anything else runs. */
static void run_here(void)
{
    setenv(RUN_HERE_ENV, "1", 1);
}

void cni_bridge_handoff(int argc, char **argv)
{
    const char *argv0 = argc > 0 && argv[0] ? argv[0] : "";
    const char *role = strrchr(argv0, '/') ? strrchr(argv0, '/') + 1 : argv0;
    const char *verb = getenv("CNI_COMMAND");
    const char *path = getenv(SOCKET_ENV);
    char digest[257];

    if (getenv(RUN_HERE_ENV)) {
        return;  /* decided before the bootloader restarted itself */
    }
    if (!environment_is_utf8(argv0)) {
        return;  /* Python's hook decides */
    }
    if (!in_list(role, ROLES) || !verb || !in_list(verb, VERBS)) {
        run_here();  /* VERSION, the operator CLI */
        return;
    }
    if (!path) {
        path = DEFAULT_SOCKET;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (!path[0] || strlen(path) >= sizeof(addr.sun_path) ||
        read_digest(digest, sizeof(digest)) < 0) {
        run_here();  /* hand-off off, or a bundle without a build digest */
        return;
    }
    strcpy(addr.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        return;
    }
    set_timeout(sock, HELLO_TIMEOUT_S);
    if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        close(sock);  /* no server: the usual case costs one syscall */
        run_here();
        return;
    }

    /* HELLO with the caller's descriptors; nothing of the call itself yet. */
    int fds[5];
    int accepted = 0;
    if (open_call_fds(fds) == 0) {
        struct buf b = {0};
        frame_begin(&b);
        put_tuple(&b, 6);
        put_cstr(&b, "hello");
        put_int(&b, PROTOCOL);
        put_cstr(&b, "call");
        put_cstr(&b, digest);
        put_cstr(&b, role);
        put_cstr(&b, verb);
        frame_end(&b);
        const char *why;
        size_t size;
        unsigned char *body = NULL;
        if (send_frame(sock, &b, fds, 5) == 0) {
            body = recv_frame(sock, MAX_HELLO, &size, &why);
        }
        if (body) {
            struct reader r = {body, body + size, {{0}}, 0, 0};
            struct value answer;
            accepted = read_value(&r, &answer) == 0 && answer.kind == K_TUPLE &&
                       answer.len == 1 && is_str(&answer.items[0], "accept");
            free(body);
        }
        free(b.data);
        close_fds(fds, 5);
    }
    if (accepted) {
        hand_over(sock, argv0);
    }
    close(sock);  /* refused or no answer: the call runs here */
    run_here();
}
