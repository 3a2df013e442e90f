/* Cancelled requests that still run: interrupted until they end, and their threads given up.
 *
 * A py:call past its deadline (or whose caller died) is cancelled: its thread gets
 * erlang.CallCancelled raised in it. Python code can swallow that (`except BaseException`),
 * and a C call (`time.sleep(100)`) does not look at it until it returns. So every cancelled
 * request that still runs is watched: CallCancelled is raised in its thread again every
 * CANCEL_REPEAT_MS, and once it has run `give_up_after' ms past its cancellation its
 * worker is given up: the pool starts a replacement thread (up to `max_given_up' threads
 * given up at once), so that later calls never wait for it, and the lost thread exits when
 * its request finally ends, its result discarded. docs/runtime.md, "Cancellation".
 *
 * Raising needs the GIL, which a scheduler must never wait for: the watch runs on the
 * interpreter's own thread (cancel_serve), which does nothing else.
 */
#ifndef PY_CANCEL_H
#define PY_CANCEL_H

#include "py_common.h"
#include "py_worker.h"

#define CANCEL_REPEAT_MS 10

typedef struct {
    long give_up_after_ms;
    int max_given_up;
} cancel_options_t;

void cancel_configure(const cancel_options_t *opts);
void cancel_options(cancel_options_t *out);

/* Watches req, cancelled while running: raises CallCancelled in its thread now (unless
 * it was just raised there) and again every CANCEL_REPEAT_MS until it ends. Takes a reference. Never fails: the watch is intrusive. */
void cancel_watch(request_t *req);

/* CallCancelled was just raised in the thread running req (GIL held) by erlang.call or a
 * conversion. The watch raises it there no sooner than CANCEL_REPEAT_MS after: raised at
 * once again, it would interrupt the code that handles the first (an `except` that cleans
 * up). */
void cancel_raised(request_t *req);

/* Cancels req at req->deadline_ns (monotonic ns) unless it is done before: its own
 * timeout, for a request nobody waits on in `receive' (py:async_call). Takes a reference. */
void cancel_at_deadline(request_t *req);

/* req is done: its deadline no longer matters. */
void cancel_forget_deadline(request_t *req);

/* The interpreter thread's loop, with tstate its thread state (GIL not held). Never
 * returns. */
void cancel_serve(PyThreadState *tstate);

#endif
