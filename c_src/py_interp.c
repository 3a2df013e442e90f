#include "py_interp.h"

#include "py_object.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "py_build_config.h"
#include "py_cancel.h"
#include "py_convert.h"
#include "py_erlang_module.h"
#include "py_error.h"
#include "py_sandbox.h"

/* Nice value of the threads that run Python (the VM's run at 0). */
#define THREAD_NICE 10

#define INTERP_STACK_BYTES (16u * 1024u * 1024u)

static struct {
    ErlNifMutex *mutex;
    ErlNifCond *cond;
    bool starting;
    /* Set once, under mutex; read without it on every submit. */
    atomic_bool running;
    bool init_done;
    char error[512];
    interp_options_t options;
    PyInterpreterState *main_state;
} interp;

/* Made once, before any thread can use it. */
static pthread_once_t interp_once = PTHREAD_ONCE_INIT;

static void
interp_create_locks(void)
{
    interp.mutex = enif_mutex_create("py_interp");
    interp.cond = enif_cond_create("py_interp");
}

PyInterpreterState *
interp_main_state(void)
{
    return interp.main_state;
}

bool
interp_is_running(void)
{
    return atomic_load(&interp.running);
}

void
interp_thread_started(void)
{
    /* Signals for the VM are the VM's: they are delivered to its threads,
     * never to ours (they would run its handlers in a thread it does not
     * know). */
    sigset_t all;
    struct sched_param batch = {0};

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    /* CPU-bound Python must not delay the VM's schedulers: as SCHED_BATCH
     * threads of lower weight, ours yield the CPU to a waking scheduler
     * thread. Threads that Python starts inherit both. Best effort. */
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &batch);
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), THREAD_NICE);
    /* Failure here means the kernel refused a filter it supports; the audit
     * hook still applies, and _erlang_sandbox.status() reports it. */
    (void)sandbox_thread_init();
}

static bool
status_ok(PyStatus status, const char *step)
{
    if (!PyStatus_Exception(status)) {
        return true;
    }
    snprintf(interp.error, sizeof(interp.error), "%s: %s%s%s", step,
             status.func != NULL ? status.func : "", status.func != NULL ? ": " : "",
             status.err_msg != NULL ? status.err_msg : "failed");
    return false;
}

static bool
initialise_python(void)
{
    PyConfig config;
    const char *executable =
        interp.options.executable[0] != '\0' ? interp.options.executable : PY_DEFAULT_EXECUTABLE;
    bool ok = false;

    if (sandbox_preinit() != 0) {
        snprintf(interp.error, sizeof(interp.error), "the sandbox could not be installed");
        return false;
    }
    if (PyImport_AppendInittab("erlang", PyInit_erlang) < 0) {
        snprintf(interp.error, sizeof(interp.error), "cannot register the erlang module");
        return false;
    }
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    config.user_site_directory = 0;
    /* A full path: the interpreter finds its prefix, or a venv's pyvenv.cfg,
     * from it, as it would when started as that executable. */
    if (!status_ok(PyConfig_SetBytesString(&config, &config.program_name, executable),
                   "program name") ||
        !status_ok(Py_InitializeFromConfig(&config), "Python initialisation")) {
        goto done;
    }
    ok = true;
done:
    PyConfig_Clear(&config);
    return ok;
}

/* After Py_Initialize, GIL held: sys.path, the erlang module, the sandbox. */
static bool
prepare_interpreter(void)
{
    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    PyObject *dir = PyUnicode_DecodeFSDefault(interp.options.python_path);
    PyObject *erlang = NULL;
    ErlNifEnv *env = enif_alloc_env();
    bool ok = false;

    if (sys_path == NULL || dir == NULL || PyList_Insert(sys_path, 0, dir) < 0) {
        goto done;
    }
    erlang = PyImport_ImportModule("erlang");
    if (erlang == NULL) {
        goto done;
    }
    error_init_atoms(env);
    conv_set_atom_limit(interp.options.atom_limit);
    if (sandbox_postinit() != 0) {
        goto done;
    }
    ok = true;
done:
    if (!ok) {
        ERL_NIF_TERM error = error_from_python(env);
        char text[400];
        enif_snprintf(text, sizeof(text), "%T", error);
        snprintf(interp.error, sizeof(interp.error), "Python set-up failed: %s", text);
    }
    Py_XDECREF(dir);
    Py_XDECREF(erlang);
    enif_free_env(env);
    return ok;
}

static void *
interp_main(void *arg)
{
    PyThreadState *tstate;
    bool ok;

    (void)arg;
    pthread_setname_np(pthread_self(), "py_interp");
    interp_thread_started();
    /* A filesystem context (cwd, umask, root) of Python's own: os.chdir and os.umask then
     * behave as in any Python process for all of Python's threads, which share it (the
     * workers and their replacements are started from this thread, Python's threads from
     * those), and the VM's threads keep theirs. Best effort: without it they would change
     * the VM's. */
    (void)unshare(CLONE_FS);
    ok = initialise_python();
    if (ok) {
        ok = prepare_interpreter();
        interp.main_state = PyInterpreterState_Get();
        tstate = PyEval_SaveThread();
    }
    if (ok) {
        ok = worker_pool_start(interp.options.workers, interp.error, sizeof(interp.error)) &&
             object_start_releaser(interp.error, sizeof(interp.error));
    }
    enif_mutex_lock(interp.mutex);
    interp.init_done = true;
    interp.running = ok;
    enif_cond_broadcast(interp.cond);
    enif_mutex_unlock(interp.mutex);
    if (ok) {
        cancel_serve(tstate);
    }
    return NULL;
}

interp_start_t
interp_start(const interp_options_t *opts, char *err, size_t errlen)
{
    pthread_t tid;
    pthread_attr_t attr;
    int rc;

    pthread_once(&interp_once, interp_create_locks);
    enif_mutex_lock(interp.mutex);
    if (interp.running) {
        enif_mutex_unlock(interp.mutex);
        return INTERP_ALREADY_STARTED;
    }
    if (interp.starting) {
        /* A failed start leaves the process with a half-made interpreter,
         * which cannot be made again. */
        snprintf(err, errlen, "%s", interp.error[0] ? interp.error : "start already attempted");
        enif_mutex_unlock(interp.mutex);
        return INTERP_FAILED;
    }
    interp.starting = true;
    interp.options = *opts;
    enif_mutex_unlock(interp.mutex);

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, INTERP_STACK_BYTES);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&tid, &attr, interp_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the interpreter thread: %s", strerror(rc));
        enif_mutex_lock(interp.mutex);
        interp.starting = false;
        enif_mutex_unlock(interp.mutex);
        return INTERP_FAILED;
    }
    enif_mutex_lock(interp.mutex);
    while (!interp.init_done) {
        enif_cond_wait(interp.cond, interp.mutex);
    }
    enif_mutex_unlock(interp.mutex);
    if (!interp.running) {
        snprintf(err, errlen, "%s", interp.error);
        return INTERP_FAILED;
    }
    return INTERP_STARTED;
}
