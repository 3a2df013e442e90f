/* The C side of ErlangEventLoop: the loop's epoll set, its sleep, and what its driver
 * process reports (py_loop.h; docs/asyncio.md). */
#include "py_loop.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "py_callback.h"
#include "py_cancel.h"
#include "py_convert.h"
#include "py_erlang_module.h"
#include "py_error.h"
#include "py_request.h"
#include "py_worker.h"

#define LOOP_MAX_EVENTS 512
/* How long creating a loop waits for its driver to attach, and a request for its reply. */
#define LOOP_DRIVER_TIMEOUT_MS 5000

typedef enum { EVENT_REPLY = 0, EVENT_MESSAGE = 1 } loop_event_kind_t;

/* Something Erlang posted for the loop: an async call's reply or a mailbox's message. */
typedef struct loop_event {
    struct loop_event *next;
    loop_event_kind_t kind;
    ErlNifEnv *env; /* owns the terms */
    ERL_NIF_TERM id, name, value;
} loop_event_t;

typedef struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC */
    bool sync_ready;     /* mutex and cond made */
    int epfd;            /* -1 once closed */
    bool selected;       /* epfd given to enif_select: only the stop callback closes it */
    ErlNifPid driver;
    ErlNifMonitor driver_monitor;
    bool attached, driver_down, closed;
    /* The wait: what may end it. */
    bool armed;              /* a select of epfd is outstanding in the VM */
    bool fd_ready;           /* the VM reported epfd readable */
    unsigned long wait_gen;  /* the latest blocking wait; its timer carries it */
    bool timer_fired;        /* the timer of wait_gen fired */
    bool interrupted;        /* the py:call of the waiting thread was cancelled */
    bool woken;              /* wakeup() from another thread */
    loop_event_t *head, *tail;
    /* request(): one at a time, from the loop's thread. */
    unsigned long request_seq;
    ErlNifEnv *reply_env;
    ERL_NIF_TERM reply;
} py_loop_t;

static ErlNifResourceType *loop_rtype = NULL;
static ERL_NIF_TERM atom_py_event_loop, atom_py_loop_start, atom_py_loop_wait,
    atom_py_loop_msg, atom_py_loop_request, atom_py_loop_close, atom_reply, atom_message;

/* ------------------------------------------------------------------------ */
/* The resource */

static void
free_events(loop_event_t *event)
{
    while (event != NULL) {
        loop_event_t *next = event->next;
        enif_free_env(event->env);
        enif_free(event);
        event = next;
    }
}

static void
loop_dtor(ErlNifEnv *env, void *obj)
{
    py_loop_t *loop = obj;

    /* A selected epfd is closed by loop_stop_cb, which the VM runs before it lets go of the
     * resource. */
    if (!loop->selected && loop->epfd >= 0) {
        close(loop->epfd);
    }
    free_events(loop->head);
    if (loop->reply_env != NULL) {
        enif_free_env(loop->reply_env);
    }
    if (loop->sync_ready) {
        pthread_mutex_destroy(&loop->mutex);
        pthread_cond_destroy(&loop->cond);
    }
}

static void
loop_stop_cb(ErlNifEnv *env, void *obj, ErlNifEvent event, int is_direct_call)
{
    py_loop_t *loop = obj;

    close((int)event);
    pthread_mutex_lock(&loop->mutex);
    loop->epfd = -1;
    pthread_mutex_unlock(&loop->mutex);
}

static void
loop_down_cb(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *monitor)
{
    py_loop_t *loop = obj;

    pthread_mutex_lock(&loop->mutex);
    loop->driver_down = true;
    pthread_cond_broadcast(&loop->cond);
    pthread_mutex_unlock(&loop->mutex);
}

bool
loop_init_resources(ErlNifEnv *env)
{
    ErlNifResourceTypeInit init = {.dtor = loop_dtor, .stop = loop_stop_cb, .down = loop_down_cb};

    atom_py_event_loop = enif_make_atom(env, "py_event_loop");
    atom_py_loop_start = enif_make_atom(env, "py_loop_start");
    atom_py_loop_wait = enif_make_atom(env, "py_loop_wait");
    atom_py_loop_msg = enif_make_atom(env, "py_loop_msg");
    atom_py_loop_request = enif_make_atom(env, "py_loop_request");
    atom_py_loop_close = enif_make_atom(env, "py_loop_close");
    atom_reply = enif_make_atom(env, "reply");
    atom_message = enif_make_atom(env, "message");
    loop_rtype = enif_open_resource_type_x(env, "py_loop", &init, ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER,
                                           NULL);
    return loop_rtype != NULL;
}

static struct timespec
timespec_at(long long ns)
{
    struct timespec at = {.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
    return at;
}

/* Sends {Tag, Body} to the loop's driver (Body 0: {Tag}). Loop mutex held or not: the send
 * takes no lock of ours. */
static bool
send_to_driver(py_loop_t *loop, ErlNifEnv *msg_env, ERL_NIF_TERM tag, ERL_NIF_TERM body)
{
    ERL_NIF_TERM msg = body == 0 ? enif_make_tuple1(msg_env, tag) : enif_make_tuple2(msg_env, tag, body);
    return enif_send(NULL, &loop->driver, msg_env, msg);
}

/* ------------------------------------------------------------------------ */
/* The Python object: erlang._LoopCore */

typedef struct {
    PyObject_HEAD
    py_loop_t *loop;
} LoopCoreObject;

static PyTypeObject *loop_core_type = NULL;

static bool
loop_is_open(LoopCoreObject *self)
{
    if (self->loop == NULL || self->loop->closed) {
        PyErr_SetString(PyExc_RuntimeError, "the event loop's core is closed");
        return false;
    }
    return true;
}

/* Waits, GIL released, until the driver attached or the deadline passed. */
static bool
wait_for_driver(py_loop_t *loop)
{
    struct timespec until = timespec_at(monotonic_ns() + LOOP_DRIVER_TIMEOUT_MS * 1000000LL);
    bool attached;

    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&loop->mutex);
    while (!loop->attached && !loop->closed) {
        if (pthread_cond_timedwait(&loop->cond, &loop->mutex, &until) == ETIMEDOUT) {
            break;
        }
    }
    attached = loop->attached;
    pthread_mutex_unlock(&loop->mutex);
    Py_END_ALLOW_THREADS
    return attached;
}

static PyObject *
core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    LoopCoreObject *self;
    py_loop_t *loop;
    pthread_condattr_t attr;
    ErlNifPid manager;
    ErlNifEnv *msg_env;
    bool sent;

    if (!PyArg_ParseTuple(args, ":_LoopCore")) {
        return NULL;
    }
    if (!enif_whereis_pid(NULL, atom_py_event_loop, &manager)) {
        PyErr_SetString(erlmod_exception("Error"),
                        "ErlangEventLoop needs the erlang_python application to be running");
        return NULL;
    }
    self = (LoopCoreObject *)type->tp_alloc(type, 0);
    loop = enif_alloc_resource(loop_rtype, sizeof(py_loop_t));
    if (self == NULL || loop == NULL) {
        Py_XDECREF(self);
        if (loop != NULL) {
            enif_release_resource(loop);
        }
        return PyErr_NoMemory();
    }
    memset(loop, 0, sizeof(*loop));
    self->loop = loop;
    loop->epfd = -1;
    pthread_mutex_init(&loop->mutex, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&loop->cond, &attr);
    pthread_condattr_destroy(&attr);
    loop->sync_ready = true;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    msg_env = enif_alloc_env();
    if (msg_env == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    sent = enif_send(NULL, &manager, msg_env,
                     enif_make_tuple2(msg_env, atom_py_loop_start, enif_make_resource(msg_env, loop)));
    enif_free_env(msg_env);
    if (!sent || !wait_for_driver(loop)) {
        PyErr_SetString(erlmod_exception("Error"), "the event loop's Erlang process did not start");
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Marks the loop closed, wakes its thread, tells the driver to stop. */
static void
close_loop(py_loop_t *loop)
{
    ErlNifEnv *msg_env;
    bool tell;

    pthread_mutex_lock(&loop->mutex);
    tell = !loop->closed && loop->attached && !loop->driver_down;
    loop->closed = true;
    pthread_cond_broadcast(&loop->cond);
    pthread_mutex_unlock(&loop->mutex);
    if (tell && (msg_env = enif_alloc_env()) != NULL) {
        (void)send_to_driver(loop, msg_env, atom_py_loop_close, 0);
        enif_free_env(msg_env);
    }
}

static void
core_dealloc(PyObject *obj)
{
    LoopCoreObject *self = (LoopCoreObject *)obj;
    PyTypeObject *type = Py_TYPE(obj);

    if (self->loop != NULL) {
        close_loop(self->loop);
        enif_release_resource(self->loop);
    }
    type->tp_free(obj);
    Py_DECREF(type);
}

static PyObject *
core_close(LoopCoreObject *self, PyObject *unused)
{
    if (self->loop != NULL) {
        close_loop(self->loop);
    }
    Py_RETURN_NONE;
}

static uint32_t
epoll_mask(int mask)
{
    /* selectors.EVENT_READ is 1, EVENT_WRITE 2. */
    return ((mask & 1) ? EPOLLIN : 0) | ((mask & 2) ? EPOLLOUT : 0);
}

static PyObject *
core_ctl(LoopCoreObject *self, PyObject *args, int op)
{
    int fd, mask = 0;
    struct epoll_event event = {0};

    if (!PyArg_ParseTuple(args, op == EPOLL_CTL_DEL ? "i" : "ii", &fd, &mask) || !loop_is_open(self)) {
        return NULL;
    }
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "invalid file descriptor: %d", fd);
        return NULL;
    }
    event.events = epoll_mask(mask);
    event.data.fd = fd;
    if (epoll_ctl(self->loop->epfd, op, fd, &event) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *
core_register(LoopCoreObject *self, PyObject *args)
{
    return core_ctl(self, args, EPOLL_CTL_ADD);
}

static PyObject *
core_modify(LoopCoreObject *self, PyObject *args)
{
    return core_ctl(self, args, EPOLL_CTL_MOD);
}

static PyObject *
core_unregister(LoopCoreObject *self, PyObject *args)
{
    return core_ctl(self, args, EPOLL_CTL_DEL);
}

static void
loop_interrupt(void *arg)
{
    py_loop_t *loop = arg;

    pthread_mutex_lock(&loop->mutex);
    loop->interrupted = true;
    pthread_cond_broadcast(&loop->cond);
    pthread_mutex_unlock(&loop->mutex);
}

static bool
wait_is_over_locked(py_loop_t *loop)
{
    return loop->fd_ready || loop->timer_fired || loop->head != NULL || loop->closed ||
           loop->driver_down || loop->interrupted || loop->woken;
}

/* Sleeps until something is ready or deadline_ns (-1: none). Loop mutex held. Up to
 * LOOP_PRECISE_MS before the deadline the driver's Erlang timer wakes us, LOOP_PRECISE_MS
 * early at most; the rest is a timed wait. */
static void
sleep_locked(py_loop_t *loop, long long deadline_ns)
{
    long long remaining_ns = deadline_ns < 0 ? -1 : deadline_ns - monotonic_ns();
    bool precise = remaining_ns >= 0 && remaining_ns <= LOOP_PRECISE_MS * 1000000LL;
    bool arm = !loop->armed;
    ErlNifEnv *msg_env;

    if (wait_is_over_locked(loop) || (deadline_ns >= 0 && remaining_ns <= 0)) {
        return;
    }
    loop->wait_gen++;
    if (arm || !precise) {
        /* {py_loop_wait, Arm, TimerMs | infinity, Gen}: the Erlang timer fires at the
         * earliest TimerMs from now and at the latest a tick after. */
        ERL_NIF_TERM timer;
        msg_env = enif_alloc_env();
        if (msg_env == NULL) {
            precise = remaining_ns >= 0; /* no driver then: time it here */
        } else {
            timer = precise || remaining_ns < 0
                        ? ATOMS.infinity
                        : enif_make_long(msg_env, remaining_ns / 1000000LL - LOOP_PRECISE_MS);
            if (send_to_driver(loop, msg_env, atom_py_loop_wait,
                               enif_make_tuple3(msg_env, arm ? ATOMS.true_ : ATOMS.false_, timer,
                                                enif_make_ulong(msg_env, loop->wait_gen)))) {
                loop->armed = true;
            }
            enif_free_env(msg_env);
        }
    }
    if (precise) {
        struct timespec until = timespec_at(deadline_ns);
        while (!wait_is_over_locked(loop)) {
            if (pthread_cond_timedwait(&loop->cond, &loop->mutex, &until) == ETIMEDOUT) {
                break;
            }
        }
    } else {
        while (!wait_is_over_locked(loop)) {
            pthread_cond_wait(&loop->cond, &loop->mutex);
        }
    }
}

/* (fd, mask) pairs of what epoll reports ready, without blocking. */
static int
poll_ready(py_loop_t *loop, struct epoll_event *events)
{
    int n;

    do {
        n = loop->epfd < 0 ? 0 : epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, 0);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? 0 : n;
}

/* The value of an event for Python: (kind, id, True, value) or (kind, id, False, exception). */
static PyObject *
event_to_python(loop_event_t *event)
{
    PyObject *id = conv_to_py(event->env, event->id);
    PyObject *value = NULL, *name = NULL, *result = NULL;
    bool ok;

    if (id == NULL) {
        return NULL;
    }
    if (event->kind == EVENT_REPLY) {
        name = conv_to_py(event->env, event->name);
        value = name == NULL ? NULL : callback_reply_value(event->env, event->value, name);
    } else {
        value = conv_to_py(event->env, event->value);
    }
    ok = value != NULL;
    if (!ok) {
        value = error_take_exception();
    }
    if (value != NULL) {
        result = Py_BuildValue("(iOOO)", (int)event->kind, id, ok ? Py_True : Py_False, value);
    }
    Py_XDECREF(id);
    Py_XDECREF(name);
    Py_XDECREF(value);
    return result;
}

/* wait(timeout) -> ([(fd, mask)], [(kind, id, ok, value)]): what is ready, after waiting up to
 * timeout seconds (None: until something is) for anything to be. */
static PyObject *
core_wait(LoopCoreObject *self, PyObject *arg)
{
    py_loop_t *loop = self->loop;
    struct epoll_event *ready = NULL;
    long long deadline_ns = -1;
    loop_event_t *events = NULL;
    thread_ctx_t *ctx = worker_thread_ctx();
    request_t *req = ctx == NULL ? NULL : ctx->current;
    bool driver_down = false;
    PyObject *fds = NULL, *posted = NULL, *result = NULL;
    int n = 0;

    if (!loop_is_open(self)) {
        return NULL;
    }
    if (arg != Py_None) {
        double seconds = PyFloat_AsDouble(arg);
        if (seconds == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        deadline_ns = monotonic_ns() + (seconds <= 0 ? 0 : (long long)(seconds * 1e9));
    }
    ready = PyMem_Malloc(sizeof(*ready) * LOOP_MAX_EVENTS);
    if (ready == NULL) {
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    n = poll_ready(loop, ready);
    pthread_mutex_lock(&loop->mutex);
    if (n == 0 && loop->head == NULL && (deadline_ns < 0 || deadline_ns > monotonic_ns())) {
        pthread_mutex_unlock(&loop->mutex);
        /* A cancelled py:call: its thread is interrupted every CANCEL_REPEAT_MS (py_cancel.h),
         * which it sees only in Python: wait no longer than that. */
        if (req != NULL && !request_set_interrupt(req, loop_interrupt, loop)) {
            long long cap = monotonic_ns() + CANCEL_REPEAT_MS * 1000000LL;
            deadline_ns = deadline_ns < 0 || deadline_ns > cap ? cap : deadline_ns;
            req = NULL;
        }
        pthread_mutex_lock(&loop->mutex);
        sleep_locked(loop, deadline_ns);
        loop->fd_ready = loop->timer_fired = loop->interrupted = loop->woken = false;
        pthread_mutex_unlock(&loop->mutex);
        if (req != NULL) {
            request_clear_interrupt(req);
        }
        n = poll_ready(loop, ready);
        pthread_mutex_lock(&loop->mutex);
    }
    events = loop->head;
    loop->head = loop->tail = NULL;
    driver_down = loop->driver_down && !loop->closed;
    pthread_mutex_unlock(&loop->mutex);
    Py_END_ALLOW_THREADS

    fds = PyList_New(n);
    posted = PyList_New(0);
    if (fds == NULL || posted == NULL) {
        goto done;
    }
    for (int i = 0; i < n; i++) {
        uint32_t got = ready[i].events;
        /* Errors and hang-ups count as both: the reader or writer finds out. */
        int mask = ((got & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? 1 : 0) |
                   ((got & (EPOLLOUT | EPOLLERR | EPOLLHUP)) ? 2 : 0);
        PyObject *pair = Py_BuildValue("(ii)", ready[i].data.fd, mask);
        if (pair == NULL) {
            goto done;
        }
        PyList_SET_ITEM(fds, i, pair);
    }
    for (loop_event_t *event = events; event != NULL; event = event->next) {
        PyObject *item = event_to_python(event);
        if (item == NULL || PyList_Append(posted, item) < 0) {
            Py_XDECREF(item);
            goto done;
        }
        Py_DECREF(item);
    }
    if (driver_down) {
        PyErr_SetString(erlmod_exception("Error"), "the event loop's Erlang process exited");
        goto done;
    }
    result = PyTuple_Pack(2, fds, posted);
done:
    free_events(events);
    PyMem_Free(ready);
    Py_XDECREF(fds);
    Py_XDECREF(posted);
    return result;
}

/* wakeup(): ends the current or next wait; any thread. */
static PyObject *
core_wakeup(LoopCoreObject *self, PyObject *unused)
{
    py_loop_t *loop = self->loop;

    if (loop != NULL) {
        pthread_mutex_lock(&loop->mutex);
        loop->woken = true;
        pthread_cond_broadcast(&loop->cond);
        pthread_mutex_unlock(&loop->mutex);
    }
    Py_RETURN_NONE;
}

/* obj as a term of a new env, for a message to the open loop's driver; false with the
 * exception set otherwise. */
static bool
term_for_driver(LoopCoreObject *self, PyObject *obj, ErlNifEnv **env, ERL_NIF_TERM *term)
{
    if (!loop_is_open(self)) {
        return false;
    }
    *env = enif_alloc_env();
    if (*env == NULL) {
        PyErr_NoMemory();
        return false;
    }
    if (!conv_to_term(*env, obj, term)) {
        enif_free_env(*env);
        return false;
    }
    return true;
}

/* send(term): {py_loop_msg, Term} to the driver. */
static PyObject *
core_send(LoopCoreObject *self, PyObject *obj)
{
    ErlNifEnv *msg_env;
    ERL_NIF_TERM term;
    bool sent;

    if (!term_for_driver(self, obj, &msg_env, &term)) {
        return NULL;
    }
    sent = send_to_driver(self->loop, msg_env, atom_py_loop_msg, term);
    enif_free_env(msg_env);
    if (!sent) {
        PyErr_SetString(erlmod_exception("Error"), "the event loop's Erlang process exited");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* request(term) -> reply: {py_loop_request, Seq, Term} to the driver, which answers with
 * py_nif:loop_reply(Loop, Seq, Reply). */
static PyObject *
core_request(LoopCoreObject *self, PyObject *obj)
{
    py_loop_t *loop = self->loop;
    ErlNifEnv *msg_env, *reply_env = NULL;
    ERL_NIF_TERM term, reply = 0;
    struct timespec until;
    PyObject *result;
    bool sent;

    if (!term_for_driver(self, obj, &msg_env, &term)) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&loop->mutex);
    loop->request_seq++;
    sent = send_to_driver(loop, msg_env, atom_py_loop_request,
                          enif_make_tuple2(msg_env, enif_make_ulong(msg_env, loop->request_seq), term));
    until = timespec_at(monotonic_ns() + LOOP_DRIVER_TIMEOUT_MS * 1000000LL);
    while (sent && loop->reply_env == NULL && !loop->closed && !loop->driver_down) {
        if (pthread_cond_timedwait(&loop->cond, &loop->mutex, &until) == ETIMEDOUT) {
            break;
        }
    }
    reply_env = loop->reply_env;
    reply = loop->reply;
    loop->reply_env = NULL;
    pthread_mutex_unlock(&loop->mutex);
    Py_END_ALLOW_THREADS
    enif_free_env(msg_env);
    if (reply_env == NULL) {
        PyErr_SetString(erlmod_exception("Error"), "the event loop's Erlang process did not answer");
        return NULL;
    }
    result = conv_to_py(reply_env, reply);
    enif_free_env(reply_env);
    return result;
}

static PyMethodDef core_methods[] = {
    {"register", (PyCFunction)core_register, METH_VARARGS, "register(fd, mask): watch fd."},
    {"modify", (PyCFunction)core_modify, METH_VARARGS, "modify(fd, mask)."},
    {"unregister", (PyCFunction)core_unregister, METH_VARARGS, "unregister(fd)."},
    {"wait", (PyCFunction)core_wait, METH_O,
     "wait(timeout) -> (fds, events): what is ready, waiting up to timeout seconds."},
    {"wakeup", (PyCFunction)core_wakeup, METH_NOARGS, "End the current or next wait."},
    {"send", (PyCFunction)core_send, METH_O, "send(term): a message to the loop's driver."},
    {"request", (PyCFunction)core_request, METH_O, "request(term) -> the driver's reply."},
    {"close", (PyCFunction)core_close, METH_NOARGS, "Close the loop's core."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot core_slots[] = {
    {Py_tp_new, core_new},
    {Py_tp_dealloc, core_dealloc},
    {Py_tp_methods, core_methods},
    {Py_tp_doc, "The C side of ErlangEventLoop: its epoll set, sleep and driver process."},
    {0, NULL},
};

int
loop_add_to_module(PyObject *module)
{
    PyType_Spec spec = {
        .name = "erlang._LoopCore",
        .basicsize = sizeof(LoopCoreObject),
        .flags = Py_TPFLAGS_DEFAULT,
        .slots = core_slots,
    };

    loop_core_type = (PyTypeObject *)PyType_FromSpec(&spec);
    if (loop_core_type == NULL) {
        return -1;
    }
    return PyModule_AddObject(module, "_LoopCore", Py_NewRef((PyObject *)loop_core_type));
}

/* ------------------------------------------------------------------------ */
/* NIFs, called by the driver */

static bool
get_loop(ErlNifEnv *env, ERL_NIF_TERM term, py_loop_t **loop)
{
    return enif_get_resource(env, term, loop_rtype, (void **)loop);
}

/* loop_attach(Loop) -> ok | {error, closed}: the calling process drives Loop. */
ERL_NIF_TERM
loop_attach_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    py_loop_t *loop;
    ErlNifPid self;
    bool ok;

    if (!get_loop(env, argv[0], &loop) || enif_self(env, &self) == NULL) {
        return enif_make_badarg(env);
    }
    pthread_mutex_lock(&loop->mutex);
    ok = !loop->closed && !loop->attached;
    if (ok) {
        loop->driver = self;
        loop->attached = enif_monitor_process(env, loop, &self, &loop->driver_monitor) == 0;
        ok = loop->attached;
        pthread_cond_broadcast(&loop->cond);
    }
    pthread_mutex_unlock(&loop->mutex);
    return ok ? ATOMS.ok : make_error(env, ATOMS.closed);
}

/* loop_select(Loop) -> ok | {error, closed | select_failed}: the VM tells the caller
 * {select, Loop, undefined, ready_input} when the loop's epoll set has something ready. */
ERL_NIF_TERM
loop_select_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    py_loop_t *loop;
    int rc = -1;
    bool closed;

    if (!get_loop(env, argv[0], &loop)) {
        return enif_make_badarg(env);
    }
    pthread_mutex_lock(&loop->mutex);
    closed = loop->closed || loop->epfd < 0;
    if (!closed) {
        rc = enif_select(env, (ErlNifEvent)loop->epfd, ERL_NIF_SELECT_READ, loop, NULL,
                         ATOMS.undefined);
        if (rc >= 0) {
            loop->selected = true;
        } else {
            loop->armed = false;
        }
    }
    pthread_mutex_unlock(&loop->mutex);
    if (closed) {
        return make_error(env, ATOMS.closed);
    }
    return rc >= 0 ? ATOMS.ok : make_error(env, enif_make_atom(env, "select_failed"));
}

/* loop_ready(Loop) -> ok: the select fired. */
ERL_NIF_TERM
loop_ready_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    py_loop_t *loop;

    if (!get_loop(env, argv[0], &loop)) {
        return enif_make_badarg(env);
    }
    pthread_mutex_lock(&loop->mutex);
    loop->armed = false;
    loop->fd_ready = true;
    pthread_cond_broadcast(&loop->cond);
    pthread_mutex_unlock(&loop->mutex);
    return ATOMS.ok;
}

/* loop_timer(Loop, Gen) -> ok: the timer of wait Gen fired. */
ERL_NIF_TERM
loop_timer_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    py_loop_t *loop;
    unsigned long gen;

    if (!get_loop(env, argv[0], &loop) || !enif_get_ulong(env, argv[1], &gen)) {
        return enif_make_badarg(env);
    }
    pthread_mutex_lock(&loop->mutex);
    if (gen == loop->wait_gen) {
        loop->timer_fired = true;
        pthread_cond_broadcast(&loop->cond);
    }
    pthread_mutex_unlock(&loop->mutex);
    return ATOMS.ok;
}

/* loop_post(Loop, reply | message, Id, Name, Value) -> ok | {error, closed}: an event for
 * the loop's thread (an async call's reply, as py_callback makes it, or a mailbox's
 * message). */
ERL_NIF_TERM
loop_post_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    py_loop_t *loop;
    loop_event_t *event;
    bool closed;

    if (!get_loop(env, argv[0], &loop) || (argv[1] != atom_reply && argv[1] != atom_message)) {
        return enif_make_badarg(env);
    }
    event = enif_alloc(sizeof(*event));
    if (event == NULL || (event->env = enif_alloc_env()) == NULL) {
        enif_free(event);
        return make_error(env, enif_make_atom(env, "enomem"));
    }
    event->next = NULL;
    event->kind = argv[1] == atom_reply ? EVENT_REPLY : EVENT_MESSAGE;
    event->id = enif_make_copy(event->env, argv[2]);
    event->name = enif_make_copy(event->env, argv[3]);
    event->value = enif_make_copy(event->env, argv[4]);
    pthread_mutex_lock(&loop->mutex);
    closed = loop->closed;
    if (!closed) {
        if (loop->tail == NULL) {
            loop->head = event;
        } else {
            loop->tail->next = event;
        }
        loop->tail = event;
        pthread_cond_broadcast(&loop->cond);
    }
    pthread_mutex_unlock(&loop->mutex);
    if (closed) {
        free_events(event);
        return make_error(env, ATOMS.closed);
    }
    return ATOMS.ok;
}

/* loop_reply(Loop, Seq, Reply) -> ok: the answer to request Seq. */
ERL_NIF_TERM
loop_reply_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    py_loop_t *loop;
    unsigned long seq;
    ErlNifEnv *reply_env;

    if (!get_loop(env, argv[0], &loop) || !enif_get_ulong(env, argv[1], &seq)) {
        return enif_make_badarg(env);
    }
    reply_env = enif_alloc_env();
    if (reply_env == NULL) {
        return make_error(env, enif_make_atom(env, "enomem"));
    }
    pthread_mutex_lock(&loop->mutex);
    if (seq == loop->request_seq && loop->reply_env == NULL) {
        loop->reply_env = reply_env;
        loop->reply = enif_make_copy(reply_env, argv[2]);
        reply_env = NULL;
        pthread_cond_broadcast(&loop->cond);
    }
    pthread_mutex_unlock(&loop->mutex);
    if (reply_env != NULL) {
        enif_free_env(reply_env);
    }
    return ATOMS.ok;
}

/* loop_stop(Loop) -> ok: the driver lets go of the epoll set (its last act). */
ERL_NIF_TERM
loop_stop_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    py_loop_t *loop;
    int fd;
    bool selected;

    if (!get_loop(env, argv[0], &loop)) {
        return enif_make_badarg(env);
    }
    pthread_mutex_lock(&loop->mutex);
    loop->closed = true;
    fd = loop->epfd;
    selected = loop->selected;
    if (!selected) {
        loop->epfd = -1;
    }
    pthread_cond_broadcast(&loop->cond);
    pthread_mutex_unlock(&loop->mutex);
    if (fd >= 0) {
        if (selected) {
            /* The stop callback closes it, now or once the VM's poller let go. */
            (void)enif_select(env, (ErlNifEvent)fd, ERL_NIF_SELECT_STOP, loop, NULL, ATOMS.undefined);
        } else {
            close(fd);
        }
    }
    return ATOMS.ok;
}
