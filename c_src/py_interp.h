/* The interpreter's lifecycle and the thread that owns it.
 *
 * One interpreter per OS process (docs/design.md, decision 3). It is initialised on
 * a thread of its own that never runs user code, so Python's signal module
 * sees no main thread it could install handlers from, and Python's signal
 * handlers are off. It is never finalised: finalising and initialising again
 * is not supported by many C extensions (numpy among them). That thread then
 * watches cancelled requests (py_cancel.h): raising CallCancelled in a thread
 * that runs one needs the GIL, which a scheduler must not wait for.
 */
#ifndef PY_INTERP_H
#define PY_INTERP_H

#include <limits.h>

#include "py_common.h"
#include "py_worker.h"

typedef struct {
    char executable[PATH_MAX]; /* the Python (or venv) to run as; "" for the build's */
    char python_path[PATH_MAX]; /* priv/python, prepended to sys.path */
    int workers;
    long atom_limit;
} interp_options_t;

typedef enum { INTERP_STARTED, INTERP_ALREADY_STARTED, INTERP_FAILED } interp_start_t;

/* Starts the interpreter and the worker pool; blocks until both are up.
 * Called on a dirty scheduler. */
interp_start_t interp_start(const interp_options_t *opts, char *err, size_t errlen);

bool interp_is_running(void);
PyInterpreterState *interp_main_state(void);

/* Called by every thread the NIF starts to run Python, before it runs any. */
void interp_thread_started(void);

#endif
