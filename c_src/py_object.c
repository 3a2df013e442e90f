#include "py_object.h"

#include <pthread.h>
#include <string.h>

#include "py_interp.h"

typedef struct {
    PyObject *obj;
} object_t;

static ErlNifResourceType *object_rtype = NULL;
static ERL_NIF_TERM atom_tag;

/* The objects waiting for the releaser, guarded by mutex. */
static struct {
    ErlNifMutex *mutex;
    ErlNifCond *cond;
    PyObject **items;
    size_t count;
    size_t capacity;
    long released;
    bool started;
} release;

static void
object_dtor(ErlNifEnv *env, void *res)
{
    object_t *handle = res;

    if (handle->obj != NULL) {
        object_release_later(handle->obj);
        handle->obj = NULL;
    }
}

bool
object_init_resources(ErlNifEnv *env)
{
    ErlNifResourceTypeInit init = {.dtor = object_dtor};

    object_rtype = enif_open_resource_type_x(env, "py_object", &init,
                                             ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    atom_tag = enif_make_atom(env, "$py_object");
    if (release.mutex == NULL) {
        release.mutex = enif_mutex_create("py_object_release");
        release.cond = enif_cond_create("py_object_release");
    }
    return object_rtype != NULL && release.mutex != NULL && release.cond != NULL;
}

void
object_release_later(PyObject *obj)
{
    enif_mutex_lock(release.mutex);
    if (release.count == release.capacity) {
        size_t capacity = release.capacity == 0 ? 256 : release.capacity * 2;
        PyObject **items = enif_realloc(release.items, capacity * sizeof(*items));
        if (items == NULL) {
            /* Out of memory: the object leaks, which is better than a crash. */
            enif_mutex_unlock(release.mutex);
            return;
        }
        release.items = items;
        release.capacity = capacity;
    }
    release.items[release.count++] = obj;
    if (release.count == 1) {
        enif_cond_signal(release.cond);
    }
    enif_mutex_unlock(release.mutex);
}

void
object_release_stats(long *pending, long *released)
{
    enif_mutex_lock(release.mutex);
    *pending = (long)release.count;
    *released = release.released;
    enif_mutex_unlock(release.mutex);
}

/* The releaser: swaps the queue for an empty one, then drops the batch with the GIL. A
 * __del__ that runs here runs on this thread (which serves no call: its erlang.call goes to
 * the dispatcher, its output to the default output). */
static void *
releaser_main(void *arg)
{
    PyThreadState *tstate;
    PyObject **batch = NULL;
    size_t batch_capacity = 0;

    (void)arg;
    pthread_setname_np(pthread_self(), "py_release");
    interp_thread_started();
    tstate = PyThreadState_New(interp_main_state());
    for (;;) {
        size_t n;
        PyObject **swap;
        size_t swap_capacity;

        enif_mutex_lock(release.mutex);
        while (release.count == 0) {
            enif_cond_wait(release.cond, release.mutex);
        }
        swap = release.items;
        swap_capacity = release.capacity;
        n = release.count;
        release.items = batch;
        release.capacity = batch_capacity;
        release.count = 0;
        enif_mutex_unlock(release.mutex);
        batch = swap;
        batch_capacity = swap_capacity;
        PyEval_RestoreThread(tstate);
        for (size_t i = 0; i < n; i++) {
            Py_DECREF(batch[i]);
        }
        /* A __del__ that raised has been reported through sys.unraisablehook already. */
        PyErr_Clear();
        (void)PyEval_SaveThread();
        enif_mutex_lock(release.mutex);
        release.released += (long)n;
        enif_mutex_unlock(release.mutex);
    }
    return NULL;
}

bool
object_start_releaser(char *err, size_t errlen)
{
    pthread_attr_t attr;
    pthread_t tid;
    int rc;

    if (release.started) {
        return true;
    }
    pthread_attr_init(&attr);
    /* A __del__ runs here: as deep a stack as the workers' own C code needs. */
    pthread_attr_setstacksize(&attr, 16u * 1024u * 1024u);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&tid, &attr, releaser_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the object releaser thread: %s", strerror(rc));
        return false;
    }
    release.started = true;
    return true;
}

ERL_NIF_TERM
object_make_handle(ErlNifEnv *env, PyObject *obj)
{
    object_t *handle = enif_alloc_resource(object_rtype, sizeof(object_t));
    ERL_NIF_TERM term;

    if (handle == NULL) {
        return 0;
    }
    handle->obj = Py_NewRef(obj);
    term = enif_make_resource(env, handle);
    enif_release_resource(handle);
    return enif_make_tuple2(env, atom_tag, term);
}

bool
object_is_handle(ErlNifEnv *env, ERL_NIF_TERM term)
{
    const ERL_NIF_TERM *elems;
    int arity;

    return enif_get_tuple(env, term, &arity, &elems) && arity == 2 && elems[0] == atom_tag &&
           enif_is_ref(env, elems[1]);
}

PyObject *
object_from_handle(ErlNifEnv *env, ERL_NIF_TERM term)
{
    const ERL_NIF_TERM *elems;
    int arity;
    object_t *handle;

    if (!enif_get_tuple(env, term, &arity, &elems) || arity != 2 ||
        !enif_get_resource(env, elems[1], object_rtype, (void **)&handle) ||
        handle->obj == NULL) {
        PyErr_SetString(PyExc_ReferenceError,
                        "this Python object handle is not from this VM's interpreter: it "
                        "was sent from another node, or kept past the life of the VM that "
                        "made it (docs/objects.md)");
        return NULL;
    }
    return Py_NewRef(handle->obj);
}
