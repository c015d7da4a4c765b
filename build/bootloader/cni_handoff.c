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
 * Frames are those of cni_bridge/serve/wire.py (its docstring describes them): a length, the
 * version, the kind, length-prefixed fields. The constants come from wire.py too, through
 * cni_handoff_wire.h, which build/bootloader/wire_header.py generates at each build.
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

#include "cni_handoff_wire.h"

static const char *const ROLES[] = ROLES_INIT;
static const char *const VERBS[] = VERBS_INIT;

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

/* ------------------------------------------------------------------ frames (serve/wire.py) */

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

static void put_u32(struct buf *b, uint32_t u)
{
    unsigned char be[4] = {(unsigned char)(u >> 24), (unsigned char)(u >> 16),
                           (unsigned char)(u >> 8), (unsigned char)u};
    put(b, be, 4);
}

static uint32_t get_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_field(struct buf *b, const void *data, size_t n)
{
    put_u32(b, (uint32_t)n);
    put(b, data, n);
}

static void put_text(struct buf *b, const char *s)
{
    put_field(b, s, strlen(s));
}

static void put_number(struct buf *b, int32_t v)
{
    put_u32(b, 4);
    put_u32(b, (uint32_t)v);
}

/* A frame of `kind`: its size is filled in by frame_end once the fields are in. */
static void frame_begin(struct buf *b, char kind)
{
    unsigned char head[6] = {0, 0, 0, 0, WIRE_VERSION, (unsigned char)kind};
    b->len = 0;
    put(b, head, sizeof(head));
}

static void frame_end(struct buf *b)
{
    size_t len = b->len;
    if (!b->failed) {
        b->len = 0;
        put_u32(b, (uint32_t)(len - 4));  /* over the 4 bytes reserved: no growth */
        b->len = len;
    }
}

struct field {
    const unsigned char *ptr;  /* into the frame */
    size_t len;
};

/* The number of fields of a frame body of our version and `kind` (the first `max` stored in
 * `out`), or -1: another version or kind, or a field running past the end. */
static int read_fields(const unsigned char *body, size_t size, char kind, struct field *out,
                       int max)
{
    size_t at = 2;
    int n = 0;
    if (size < 2 || body[0] != WIRE_VERSION || body[1] != (unsigned char)kind) {
        return -1;
    }
    while (at < size) {
        if (size - at < 4 || size - at - 4 < get_u32(body + at)) {
            return -1;
        }
        if (n < max) {
            out[n] = (struct field){body + at + 4, get_u32(body + at)};
        }
        at += 4 + get_u32(body + at);
        n++;
    }
    return n;
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
    *size = get_u32(header);
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
_Static_assert(CALL_FDS == 5, "open_call_fds opens wire.CALL_FDS: net, mnt, root, cwd, stderr");

static int open_call_fds(int fds[CALL_FDS])
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

    frame_begin(&b, KIND_REQUEST);
    put_text(&b, argv0);
    put_number(&b, (int32_t)mask);
    put_text(&b, stdin_data ? "" : stdin_error);
    put_field(&b, stdin_data ? stdin_data : (unsigned char *)"", stdin_data ? stdin_size : 0);
    for (char **e = environ; *e; e++) {
        put_text(&b, *e);  /* NAME=value, as the server reads os.environ's */
    }
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
    struct field result[2];  /* exit code, stdout */
    if (read_fields(body, size, KIND_RESULT, result, 2) < 2 || result[0].len != 4) {
        went_away("unexpected answer");
    }
    write_all_fd(1, result[1].ptr, result[1].len);
    _exit((int)(int32_t)get_u32(result[0].ptr));
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

    /* CALL with the caller's descriptors; nothing of the call itself yet. */
    int fds[CALL_FDS];
    int accepted = 0;
    if (open_call_fds(fds) == 0) {
        struct buf b = {0};
        frame_begin(&b, KIND_CALL);
        put_text(&b, digest);
        put_text(&b, role);
        put_text(&b, verb);
        frame_end(&b);
        const char *why;
        size_t size;
        unsigned char *body = NULL;
        if (send_frame(sock, &b, fds, CALL_FDS) == 0) {
            body = recv_frame(sock, MAX_HELLO, &size, &why);
        }
        if (body) {
            accepted = read_fields(body, size, KIND_ACCEPT, NULL, 0) >= 0;
            free(body);
        }
        free(b.data);
        close_fds(fds, CALL_FDS);
    }
    if (accepted) {
        hand_over(sock, argv0);
    }
    close(sock);  /* refused or no answer: the call runs here */
    run_here();
}
