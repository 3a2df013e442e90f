/* py_exec_port: runs one OS command for the Erlang VM, as an Erlang port program.
 *
 * Erlang ports cannot close only a program's stdin, cannot keep its stderr apart from its
 * stdout, and closing a port does not kill the process it started. This program sits between
 * the port and the command and does those three things (docs/ports.md):
 *
 *   - it talks to Erlang on fds 3 (in) and 4 (out), `{packet, 4}' frames, so that its own
 *     fds 0-2 stay the VM's and a command's inherited stdout goes where the VM's goes;
 *   - it starts the command in a process group of its own, with pipes for stdin, stdout and
 *     stderr as asked, and frames what comes out, each stream tagged;
 *   - it is the subreaper of everything the command starts, so that when the port closes
 *     (the owner died, the VM died, Erlang asked) it kills the group and every descendant
 *     that left it, reaps them all, and only then exits;
 *   - it can serve one command after another (py_exec_pool keeps it for reuse), so that a
 *     command costs one fork and exec, as a plain port does, not two.
 *
 * Output is sent only against credit that Erlang grants, so a command that prints faster
 * than Erlang consumes waits in its pipe instead of growing the VM's memory.
 *
 * Frames from Erlang (first byte the tag, integers big-endian):
 *   'S' flags:u32 argc:u32 argv... envc:u32 env... cwd   start; strings NUL-terminated;
 *                                                         envc 0xFFFFFFFF = inherit
 *   'D' bytes      write to the command's stdin; acknowledged by 'W' (or 'w': broken pipe)
 *   'E'            close the command's stdin
 *   'C' stream:u8 n:u32   n more bytes of stream ('O' stdout, 'R' stderr) may be sent
 *   'K' sig:u32 group:u8   send a signal to the command (group: to its process group)
 *   'N'            kill everything, reap it, answer 'Y', then wait for the next 'S'
 *   'Z'            kill everything, reap it, exit
 * Frames to Erlang:
 *   'P' pid:u32                 started
 *   'F' errno:u32 stage         could not start; stage is "chdir" or "exec"
 *   'O' bytes, 'R' bytes        stdout, stderr
 *   'o', 'r'                    end of stdout, of stderr
 *   'W', 'w'                    a 'D' frame written; or dropped, the command closed stdin
 *   'X' signalled:u8 value:u32  the command ended: exit code, or the signal that killed it
 *   'Y'                         ready for the next command (after 'N')
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define FROM_ERLANG 3
#define TO_ERLANG 4
/* The most one output frame carries, and the size asked for the output pipes: fewer, larger
 * reads and writes for a command that writes a lot (the kernel may give less). */
#define CHUNK (256 * 1024)

/* Start flags: where each stream goes. */
#define F_STDIN_PIPE 0x01u   /* else /dev/null */
#define F_STDOUT_PIPE 0x02u  /* else see F_STDOUT_NULL */
#define F_STDOUT_NULL 0x04u  /* else the VM's own stdout */
#define F_STDERR_PIPE 0x08u  /* else see the next two */
#define F_STDERR_OUT 0x10u   /* into stdout */
#define F_STDERR_NULL 0x20u  /* else the VM's own stderr */

static pid_t child = -1;
static bool child_exited = false;
static int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
/* Bytes of each stream Erlang is ready to take; a stream is not read while it has none,
 * so one that nobody reads holds up only itself. */
static uint64_t credit_out = 0, credit_err = 0;
/* Input the command has not read yet: the bytes of the 'D' frames queued, in order, and
 * where each frame ends (counted from the first byte ever queued), to acknowledge each one
 * once the command has taken all of it. Erlang may send several frames without waiting. */
static unsigned char *pending = NULL;
static size_t pending_len = 0, pending_off = 0, pending_cap = 0;
static uint64_t queued_total = 0, written_total = 0;
static uint64_t *frame_ends = NULL;
static size_t frames_head = 0, frames_len = 0, frames_cap = 0;
static bool close_stdin_after_write = false;

/* ------------------------------------------------------------------------ */
/* Framing */

static void
die(const char *what)
{
    /* The VM reads nothing from our stderr; this is for someone running us by hand. */
    fprintf(stderr, "py_exec_port: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void
write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("write to Erlang");
        }
        p += n;
        len -= (size_t)n;
    }
}

static void
put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t
get_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* One frame: tag, then head (may be NULL), then body (may be NULL). */
static void
send_frame(char tag, const void *head, size_t head_len, const void *body, size_t body_len)
{
    unsigned char header[5];
    put_u32(header, (uint32_t)(1 + head_len + body_len));
    header[4] = (unsigned char)tag;
    write_all(TO_ERLANG, header, sizeof(header));
    if (head_len > 0) {
        write_all(TO_ERLANG, head, head_len);
    }
    if (body_len > 0) {
        write_all(TO_ERLANG, body, body_len);
    }
}

static void
send_u32(char tag, uint32_t v)
{
    unsigned char b[4];
    put_u32(b, v);
    send_frame(tag, b, 4, NULL, 0);
}

static bool
read_exact(int fd, void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n == 0) {
            return false;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* A frame from Erlang, malloc'ed; NULL when the port is closed. */
static unsigned char *
read_frame(size_t *len)
{
    unsigned char header[4];
    unsigned char *body;

    if (!read_exact(FROM_ERLANG, header, 4)) {
        return NULL;
    }
    *len = get_u32(header);
    body = malloc(*len + 1);
    if (body == NULL) {
        die("out of memory");
    }
    if (!read_exact(FROM_ERLANG, body, *len)) {
        free(body);
        return NULL;
    }
    body[*len] = '\0';
    return body;
}

/* ------------------------------------------------------------------------ */
/* Ending everything */

/* Kills the command's group and every descendant that was reparented to us, and reaps them
 * all. Descendants that left the group (setsid) become our children when their parent dies,
 * since we are their subreaper; each round kills what it finds until none is left. */
static void
kill_everything(void)
{
    char path[64];
    int status;

    if (child > 0) {
        kill(-child, SIGKILL);
        kill(child, SIGKILL);
    }
    snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
    for (;;) {
        FILE *f = fopen(path, "r");
        int pid;
        if (f != NULL) {
            while (fscanf(f, "%d", &pid) == 1) {
                pid_t group = getpgid(pid);
                if (group > 0 && group != getpgrp()) {
                    kill(-group, SIGKILL);
                }
                kill(pid, SIGKILL);
            }
            fclose(f);
        }
        if (waitpid(-1, &status, 0) < 0 && errno == ECHILD) {
            break;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Starting the command */

/* Finds file on PATH (from the command's environment when given) as execvp would. */
static const char *
find_program(const char *file, char *const *env, char *buf, size_t size)
{
    const char *path = NULL;

    if (strchr(file, '/') != NULL) {
        return file;
    }
    if (env != NULL) {
        for (char *const *e = env; *e != NULL; e++) {
            if (strncmp(*e, "PATH=", 5) == 0) {
                path = *e + 5;
            }
        }
    } else {
        path = getenv("PATH");
    }
    if (path == NULL) {
        path = "/usr/local/bin:/usr/bin:/bin";
    }
    while (*path != '\0') {
        const char *end = strchr(path, ':');
        size_t dir_len = end == NULL ? strlen(path) : (size_t)(end - path);
        if (dir_len == 0) {
            snprintf(buf, size, "%s", file);
        } else {
            snprintf(buf, size, "%.*s/%s", (int)dir_len, path, file);
        }
        if (access(buf, X_OK) == 0) {
            return buf;
        }
        path += dir_len + (end != NULL);
    }
    return NULL;
}

/* Closes every fd from first up: one system call where the kernel has close_range (5.9). */
static void
close_from(int first)
{
    long max;

    if (close_range((unsigned int)first, ~0U, 0) == 0) {
        return;
    }
    max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) {
        max = 65536;
    }
    for (int fd = first; fd < max; fd++) {
        close(fd);
    }
}

static int
open_null(int flags)
{
    int fd = open("/dev/null", flags | O_CLOEXEC);
    if (fd < 0) {
        die("open /dev/null");
    }
    return fd;
}

static void
make_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) < 0) {
        die("pipe");
    }
}

static void
make_output_pipe(int fds[2])
{
    make_pipe(fds);
    (void)fcntl(fds[0], F_SETPIPE_SZ, CHUNK);
}

/* In the child: stdio in place, a group of its own, default signals, then exec. On failure
 * the errno and the stage go up the error pipe. */
static void
exec_child(const char *program, char **argv, char **env, const char *cwd, int in, int out,
           int err, int error_pipe)
{
    sigset_t none;
    const char *stage = "setup";
    int e;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* The VM ignores SIGPIPE and more; commands expect the defaults, as subprocess gives. */
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP) {
            signal(sig, SIG_DFL);
        }
    }
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) {
        goto fail;
    }
    /* Everything else closes: our fds 3 and 4, the VM's inherited ones. The error pipe moves
     * to fd 3, close-on-exec. */
    if (dup3(error_pipe, 3, O_CLOEXEC) < 0) {
        goto fail;
    }
    error_pipe = 3;
    close_from(4);
    if (cwd[0] != '\0') {
        stage = "chdir";
        if (chdir(cwd) < 0) {
            goto fail;
        }
    }
    stage = "exec";
    if (env != NULL) {
        execve(program, argv, env);
    } else {
        execv(program, argv);
    }
fail:
    e = errno;
    {
        unsigned char msg[4 + 16];
        size_t len = strlen(stage);
        put_u32(msg, (uint32_t)e);
        memcpy(msg + 4, stage, len);
        (void)!write(error_pipe, msg, 4 + len);
    }
    _exit(127);
}

/* Points out[0..count) at the count NUL-terminated strings from p; returns what follows
 * them, or NULL if the frame ends first. */
static unsigned char *
split_strings(unsigned char *p, const unsigned char *end, uint32_t count, char **out)
{
    for (uint32_t i = 0; i < count; i++) {
        out[i] = (char *)p;
        p = memchr(p, '\0', (size_t)(end - p));
        if (p == NULL) {
            return NULL;
        }
        p++;
    }
    return p;
}

/* Parses the 'S' frame and starts the command; false if it could not (reported already). */
static bool
start(unsigned char *frame, size_t len)
{
    unsigned char *p = frame + 1, *end = frame + len;
    uint32_t flags, argc, envc;
    char **argv = NULL, **env = NULL;
    const char *cwd, *program;
    char found[PATH_MAX];
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    int error_pipe[2];
    int child_in, child_out, child_err;
    unsigned char msg[4 + 16];
    ssize_t n;

    if (end - p < 8) {
        goto bad;
    }
    flags = get_u32(p);
    argc = get_u32(p + 4);
    p += 8;
    if (argc == 0 || argc > (uint32_t)(end - p)) {
        goto bad;
    }
    argv = calloc(argc + 1, sizeof(char *));
    if (argv == NULL || (p = split_strings(p, end, argc, argv)) == NULL) {
        goto bad;
    }
    if (end - p < 4) {
        goto bad;
    }
    envc = get_u32(p);
    p += 4;
    if (envc != 0xFFFFFFFFu) {
        if (envc > (uint32_t)(end - p)) {
            goto bad;
        }
        env = calloc(envc + 1, sizeof(char *));
        if (env == NULL || (p = split_strings(p, end, envc, env)) == NULL) {
            goto bad;
        }
    }
    if (p >= end || memchr(p, '\0', (size_t)(end - p) + 1) == NULL) {
        goto bad;
    }
    cwd = (const char *)p;

    program = find_program(argv[0], env, found, sizeof(found));
    if (program == NULL) {
        unsigned char b[4];
        put_u32(b, ENOENT);
        send_frame('F', b, 4, "exec", 4);
        return false;
    }

    if (flags & F_STDIN_PIPE) {
        make_pipe(in_pipe);
        child_in = in_pipe[0];
    } else {
        child_in = open_null(O_RDONLY);
    }
    if (flags & F_STDOUT_PIPE) {
        make_output_pipe(out_pipe);
        child_out = out_pipe[1];
    } else if (flags & F_STDOUT_NULL) {
        child_out = open_null(O_WRONLY);
    } else {
        child_out = 1;
    }
    if (flags & F_STDERR_PIPE) {
        make_output_pipe(err_pipe);
        child_err = err_pipe[1];
    } else if (flags & F_STDERR_OUT) {
        child_err = child_out;
    } else if (flags & F_STDERR_NULL) {
        child_err = open_null(O_WRONLY);
    } else {
        child_err = 2;
    }
    make_pipe(error_pipe);

    child = fork();
    if (child < 0) {
        die("fork");
    }
    if (child == 0) {
        /* Above every fd the parent's set-up made, so dup2 cannot overwrite it. */
        int high = fcntl(error_pipe[1], F_DUPFD_CLOEXEC, 64);
        exec_child(program, argv, env, cwd, child_in, child_out, child_err,
                   high < 0 ? error_pipe[1] : high);
    }
    /* The race with a setpgid in the child: both set it, whichever runs first. */
    setpgid(child, child);
    close(error_pipe[1]);
    if (child_in > 2) {
        close(child_in);
    }
    if (child_out > 2) {
        close(child_out);
    }
    if (child_err > 2 && child_err != child_out) {
        close(child_err);
    }
    stdin_fd = in_pipe[1];
    stdout_fd = out_pipe[0];
    stderr_fd = err_pipe[0];
    if (stdin_fd >= 0) {
        fcntl(stdin_fd, F_SETFL, fcntl(stdin_fd, F_GETFL) | O_NONBLOCK);
    }
    do {
        n = read(error_pipe[0], msg, sizeof(msg));
    } while (n < 0 && errno == EINTR);
    close(error_pipe[0]);
    free(argv);
    free(env);
    if (n >= 4) {
        int status;
        send_frame('F', msg, 4, msg + 4, (size_t)n - 4);
        waitpid(child, &status, 0);
        child = -1;
        return false;
    }
    send_u32('P', (uint32_t)child);
    return true;
bad:
    free(argv);
    free(env);
    errno = EINVAL;
    die("bad start frame");
    return false;
}

/* ------------------------------------------------------------------------ */
/* Running */

static void
close_stdin(void)
{
    if (stdin_fd >= 0) {
        close(stdin_fd);
        stdin_fd = -1;
    }
}

static void *
grow(void *buf, size_t *cap, size_t need, size_t item)
{
    size_t cap2 = *cap == 0 ? 16 : *cap;
    void *p;

    if (need <= *cap) {
        return buf;
    }
    while (cap2 < need) {
        cap2 *= 2;
    }
    p = realloc(buf, cap2 * item);
    if (p == NULL) {
        die("out of memory");
    }
    *cap = cap2;
    return p;
}

static bool
has_pending(void)
{
    return frames_len > 0;
}

/* Queues a 'D' frame's bytes; an empty one is acknowledged at once. */
static void
queue_input(const unsigned char *data, size_t len)
{
    if (pending_off > 0) {
        memmove(pending, pending + pending_off, pending_len - pending_off);
        pending_len -= pending_off;
        pending_off = 0;
    }
    pending = grow(pending, &pending_cap, pending_len + len, 1);
    memcpy(pending + pending_len, data, len);
    pending_len += len;
    queued_total += len;
    if (frames_head > 0) {
        memmove(frame_ends, frame_ends + frames_head, frames_len * sizeof(uint64_t));
        frames_head = 0;
    }
    frame_ends = grow(frame_ends, &frames_cap, frames_len + 1, sizeof(uint64_t));
    frame_ends[frames_len++] = queued_total;
}

/* Drops the queued input, answering 'w' for each frame: the command closed its stdin. */
static void
drop_input(void)
{
    for (; frames_len > 0; frames_len--) {
        send_frame('w', NULL, 0, NULL, 0);
    }
    frames_head = 0;
    pending_len = pending_off = 0;
    written_total = queued_total;
}

/* Writes what the command will take of the queued input, and acknowledges each frame it
 * has taken all of. */
static void
flush_pending(void)
{
    while (pending_off < pending_len) {
        ssize_t n = write(stdin_fd, pending + pending_off, pending_len - pending_off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            drop_input();
            close_stdin();
            return;
        }
        pending_off += (size_t)n;
        written_total += (uint64_t)n;
    }
    while (frames_len > 0 && frame_ends[frames_head] <= written_total) {
        frames_head++;
        frames_len--;
        send_frame('W', NULL, 0, NULL, 0);
    }
    if (frames_len == 0 && close_stdin_after_write) {
        close_stdin();
    }
}

/* Reads one chunk of a stream, within credit, and sends it; at its end, the end mark. */
static void
forward(int *fd, uint64_t *credit, char tag, char eof_tag)
{
    static unsigned char buf[CHUNK];
    size_t want = *credit < CHUNK ? (size_t)*credit : CHUNK;
    ssize_t n = read(*fd, buf, want);

    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
    }
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        send_frame(eof_tag, NULL, 0, NULL, 0);
        return;
    }
    *credit -= (uint64_t)n;
    send_frame(tag, NULL, 0, buf, (size_t)n);
}

static void
reap(void)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == child && !child_exited) {
            unsigned char b[5];
            child_exited = true;
            b[0] = WIFSIGNALED(status) ? 1 : 0;
            put_u32(b + 1, (uint32_t)(WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status)));
            send_frame('X', b, 5, NULL, 0);
        }
    }
}

typedef enum { GO_ON, NEXT, END } verdict_t;

/* Handles one frame of a running command. */
static verdict_t
handle_frame(unsigned char *frame, size_t len)
{
    switch (len == 0 ? 0 : frame[0]) {
    case 'D':
        if (stdin_fd < 0) {
            send_frame('w', NULL, 0, NULL, 0);
            break;
        }
        queue_input(frame + 1, len - 1);
        flush_pending();
        break;
    case 'E':
        if (has_pending()) {
            close_stdin_after_write = true;
        } else {
            close_stdin();
        }
        break;
    case 'C':
        if (len >= 6) {
            *(frame[1] == 'R' ? &credit_err : &credit_out) += get_u32(frame + 2);
        }
        break;
    case 'K':
        /* The group may outlive the command (a background job): it can still be signalled. */
        if (len >= 6 && child > 0 && (frame[5] || !child_exited)) {
            int sig = (int)get_u32(frame + 1);
            kill(frame[5] ? -child : child, sig);
        }
        break;
    case 'N':
        return NEXT;
    case 'Z':
        return END;
    default:
        break;
    }
    return GO_ON;
}

/* Back to the state before 'S', for the next command. */
static void
reset(void)
{
    kill_everything();
    close_stdin();
    if (stdout_fd >= 0) {
        close(stdout_fd);
    }
    if (stderr_fd >= 0) {
        close(stderr_fd);
    }
    stdout_fd = stderr_fd = -1;
    /* Unanswered: Erlang is done with this command. */
    frames_head = frames_len = 0;
    pending_len = pending_off = 0;
    queued_total = written_total = 0;
    close_stdin_after_write = false;
    credit_out = credit_err = 0;
    child = -1;
    child_exited = false;
}

/* Serves one started command until Erlang sends 'N' (NEXT), 'Z' or closes the port (END). */
static verdict_t
serve(int sfd)
{
    unsigned char *frame;
    size_t len;

    for (;;) {
        struct pollfd fds[5];
        int n = 0, i_erl, i_sig, i_in = -1, i_out = -1, i_err = -1;
        verdict_t verdict;

        i_erl = n;
        fds[n++] = (struct pollfd){.fd = FROM_ERLANG, .events = POLLIN};
        i_sig = n;
        fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        if (stdin_fd >= 0 && has_pending()) {
            i_in = n;
            fds[n++] = (struct pollfd){.fd = stdin_fd, .events = POLLOUT};
        }
        if (stdout_fd >= 0 && credit_out > 0) {
            i_out = n;
            fds[n++] = (struct pollfd){.fd = stdout_fd, .events = POLLIN};
        }
        if (stderr_fd >= 0 && credit_err > 0) {
            i_err = n;
            fds[n++] = (struct pollfd){.fd = stderr_fd, .events = POLLIN};
        }
        if (poll(fds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("poll");
        }
        /* Output before the exit status, so Erlang has all of a stream when it sees 'X'. */
        if (i_out >= 0 && fds[i_out].revents) {
            forward(&stdout_fd, &credit_out, 'O', 'o');
        }
        if (i_err >= 0 && fds[i_err].revents) {
            forward(&stderr_fd, &credit_err, 'R', 'r');
        }
        if (i_in >= 0 && fds[i_in].revents) {
            flush_pending();
        }
        if (fds[i_sig].revents) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof(info)) > 0) {
            }
            reap();
        }
        if (fds[i_erl].revents) {
            frame = read_frame(&len);
            if (frame == NULL) {
                return END;
            }
            verdict = handle_frame(frame, len);
            free(frame);
            if (verdict != GO_ON) {
                return verdict;
            }
        }
    }
}

/* Until a command is started: its start frame, or 'N' after a start that failed. */
static verdict_t
await_start(void)
{
    unsigned char *frame;
    size_t len;

    while ((frame = read_frame(&len)) != NULL) {
        bool started = len > 0 && frame[0] == 'S' && start(frame, len);
        char tag = len > 0 ? (char)frame[0] : 0;
        free(frame);
        if (started) {
            return GO_ON;
        }
        if (tag == 'N') {
            return NEXT;
        }
        if (tag == 'Z') {
            return END;
        }
    }
    return END;
}

int
main(void)
{
    sigset_t chld;
    int sfd;

    /* Fds 0-2 are where a command's streams go when it inherits them; in a VM started
     * detached they may be closed, and a pipe must not take their place. */
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0) {
            (void)!open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        }
    }
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    signal(SIGCHLD, SIG_DFL);
    sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        die("signalfd");
    }
    fcntl(FROM_ERLANG, F_SETFD, FD_CLOEXEC);
    fcntl(TO_ERLANG, F_SETFD, FD_CLOEXEC);

    /* One command after another: 'N' ends one (its leftovers killed) and makes us ready
     * for the next, which py_exec_pool hands out; 'Z' or a closed port ends us. */
    for (;;) {
        verdict_t verdict = await_start();
        if (verdict == GO_ON) {
            verdict = serve(sfd);
        }
        reset();
        if (verdict == END) {
            return 0;
        }
        send_frame('Y', NULL, 0, NULL, 0);
    }
}
