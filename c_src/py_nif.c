/* erlang_python NIF entry: the function table, load and upgrade.
 *
 * The NIFs only enqueue and signal; Python runs on threads of its own
 * (py_worker.c) and answers with messages (docs/design.md, decision 1).
 */
#include "py_common.h"

#include <dlfcn.h>
#include <string.h>

#include "py_build_config.h"
#include "py_callback.h"
#include "py_cancel.h"
#include "py_convert.h"
#include "py_interp.h"
#include "py_loop.h"
#include "py_object.h"
#include "py_request.h"
#include "py_stream.h"
#include "py_worker.h"

py_atoms_t ATOMS;

static void
make_atoms(ErlNifEnv *env)
{
    ATOMS.ok = enif_make_atom(env, "ok");
    ATOMS.error = enif_make_atom(env, "error");
    ATOMS.true_ = enif_make_atom(env, "true");
    ATOMS.false_ = enif_make_atom(env, "false");
    ATOMS.none = enif_make_atom(env, "none");
    ATOMS.nil = enif_make_atom(env, "nil");
    ATOMS.undefined = enif_make_atom(env, "undefined");
    ATOMS.nan = enif_make_atom(env, "nan");
    ATOMS.infinity = enif_make_atom(env, "infinity");
    ATOMS.neg_infinity = enif_make_atom(env, "neg_infinity");
    ATOMS.bytes = enif_make_atom(env, "bytes");
    ATOMS.timeout = enif_make_atom(env, "timeout");
    ATOMS.badarg = enif_make_atom(env, "badarg");
    ATOMS.py_result = enif_make_atom(env, "py_result");
    ATOMS.py_callback = enif_make_atom(env, "py_callback");
    ATOMS.py_object = enif_make_atom(env, "py_object");
    ATOMS.not_started = enif_make_atom(env, "not_started");
    ATOMS.already_started = enif_make_atom(env, "already_started");
    ATOMS.closed = enif_make_atom(env, "closed");
    ATOMS.call = enif_make_atom(env, "call");
    ATOMS.eval = enif_make_atom(env, "eval");
    ATOMS.exec = enif_make_atom(env, "exec");
    ATOMS.throw_ = enif_make_atom(env, "throw");
    ATOMS.exit_ = enif_make_atom(env, "exit");
}

/* ------------------------------------------------------------------------ */

static bool
get_path(ErlNifEnv *env, ERL_NIF_TERM map, const char *key, char *out, size_t size)
{
    ERL_NIF_TERM value;
    ErlNifBinary bin;

    out[0] = '\0';
    if (!enif_get_map_value(env, map, enif_make_atom(env, key), &value)) {
        return true; /* optional */
    }
    if (!enif_inspect_binary(env, value, &bin) || bin.size >= size ||
        memchr(bin.data, '\0', bin.size) != NULL) {
        return false;
    }
    memcpy(out, bin.data, bin.size);
    out[bin.size] = '\0';
    return true;
}

/* start(#{python => Bin, python_path => Bin, workers => N, atom_limit => N})
 *   -> ok | already_started | {error, Reason} */
static ERL_NIF_TERM
start_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    interp_options_t opts;
    ERL_NIF_TERM value;
    char err[512] = "";
    cancel_options_t cancel;
    int workers = 8;
    long atom_limit = 10000;

    memset(&opts, 0, sizeof(opts));
    if (!enif_is_map(env, argv[0]) ||
        !get_path(env, argv[0], "python", opts.executable, sizeof(opts.executable)) ||
        !get_path(env, argv[0], "python_path", opts.python_path, sizeof(opts.python_path))) {
        return enif_make_badarg(env);
    }
    if (enif_get_map_value(env, argv[0], enif_make_atom(env, "workers"), &value) &&
        (!enif_get_int(env, value, &workers) || workers < 1 || workers > 1024)) {
        return enif_make_badarg(env);
    }
    if (enif_get_map_value(env, argv[0], enif_make_atom(env, "atom_limit"), &value) &&
        (!enif_get_long(env, value, &atom_limit) || atom_limit < 0)) {
        return enif_make_badarg(env);
    }
    cancel_options(&cancel);
    if (enif_get_map_value(env, argv[0], enif_make_atom(env, "give_up_after"), &value) &&
        (!enif_get_long(env, value, &cancel.give_up_after_ms) || cancel.give_up_after_ms < 0)) {
        return enif_make_badarg(env);
    }
    if (enif_get_map_value(env, argv[0], enif_make_atom(env, "max_given_up"), &value) &&
        (!enif_get_int(env, value, &cancel.max_given_up) || cancel.max_given_up < 0)) {
        return enif_make_badarg(env);
    }
    /* Also on a start that finds the interpreter running: the application's latest. */
    cancel_configure(&cancel);
    opts.workers = workers;
    opts.atom_limit = atom_limit;
    switch (interp_start(&opts, err, sizeof(err))) {
    case INTERP_STARTED:
        return ATOMS.ok;
    case INTERP_ALREADY_STARTED:
        return ATOMS.already_started;
    default:
        return make_error(env, make_binary(env, err, strlen(err)));
    }
}

/* The longest deadline submit/5 keeps: about a century. */
#define SUBMIT_MAX_TIMEOUT_MS (100LL * 365 * 24 * 3600 * 1000)

/* submit's work: copy the payload into a request and queue it. */
static ERL_NIF_TERM
submit_copy_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    request_kind_t kind;
    request_t *req;
    ERL_NIF_TERM term;
    int spin_us;

    if (!request_kind_from_term(argv[0], &kind)) {
        return enif_make_badarg(env);
    }
    if (!interp_is_running()) {
        return make_error(env, ATOMS.not_started);
    }
    req = request_new(env, kind, argv[1]);
    if (req == NULL) {
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    if (!request_set_options(env, req, argc, argv, 2)) {
        enif_release_resource(req);
        return enif_make_badarg(env);
    }
    if ((req->flags & REQ_DETACHED) != 0 && (req->flags & REQ_DISCARD) == 0) {
        /* py:async_call: its caller may never wait, and its death must still stop it. */
        request_monitor_now(env, req);
    }
    if (argc == 5) {
        /* A deadline of its own, in ms from now (py:async_call's timeout). */
        long timeout_ms;
        if (!enif_get_long(env, argv[4], &timeout_ms) || timeout_ms < 0) {
            enif_release_resource(req);
            return enif_make_badarg(env);
        }
        /* Past a century it is no deadline (and ns would overflow). */
        if (timeout_ms < SUBMIT_MAX_TIMEOUT_MS) {
            req->deadline_ns = monotonic_ns() + timeout_ms * 1000000LL;
            cancel_at_deadline(req);
        }
    }
    term = enif_make_resource(env, req); /* keeps req alive through this call */
    spin_us = worker_pool_push(req);
    enif_release_resource(req);
    return enif_make_tuple3(env, ATOMS.ok, term, enif_make_int(env, spin_us));
}

/* submit(Kind, Payload[, GroupLeader[, Flags[, TimeoutMs]]])
 *   -> {ok, Request, SpinMicros} | {error, not_started}.
 * The caller then polls, arms and receives (py_request.h); SpinMicros is how long polling
 * pays. A large payload is copied on a dirty scheduler, so that the caller's scheduler
 * runs its other processes meanwhile. */
static ERL_NIF_TERM
submit_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    if (request_payload_is_large(env, argv[1])) {
        return enif_schedule_nif(env, "submit", ERL_NIF_DIRTY_JOB_CPU_BOUND, submit_copy_nif,
                                 argc, argv);
    }
    return submit_copy_nif(env, argc, argv);
}

/* info() -> #{running, workers, busy, queued, given_up, given_up_total, max_given_up,
 *             give_up_after, atoms_created, library, default_python} */
static ERL_NIF_TERM
info_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    worker_stats_t stats;
    cancel_options_t cancel;
    long releasing, released;
    ERL_NIF_TERM keys[] = {
        enif_make_atom(env, "running"),        enif_make_atom(env, "workers"),
        enif_make_atom(env, "busy"),           enif_make_atom(env, "queued"),
        enif_make_atom(env, "given_up"),       enif_make_atom(env, "given_up_total"),
        enif_make_atom(env, "max_given_up"),   enif_make_atom(env, "give_up_after"),
        enif_make_atom(env, "atoms_created"),  enif_make_atom(env, "library"),
        enif_make_atom(env, "default_python"), enif_make_atom(env, "objects_releasing"),
        enif_make_atom(env, "objects_released"),
    };
    ERL_NIF_TERM values[sizeof(keys) / sizeof(keys[0])];

    worker_pool_stats(&stats);
    cancel_options(&cancel);
    values[0] = interp_is_running() ? ATOMS.true_ : ATOMS.false_;
    values[1] = enif_make_int(env, stats.workers);
    values[2] = enif_make_int(env, stats.busy);
    values[3] = enif_make_int(env, stats.queued);
    values[4] = enif_make_int(env, stats.given_up);
    values[5] = enif_make_long(env, stats.given_up_total);
    values[6] = enif_make_int(env, cancel.max_given_up);
    values[7] = enif_make_long(env, cancel.give_up_after_ms);
    values[8] = enif_make_long(env, conv_atoms_created());
    values[9] = make_binary(env, PY_LIBRARY_PATH, strlen(PY_LIBRARY_PATH));
    values[10] = make_binary(env, PY_DEFAULT_EXECUTABLE, strlen(PY_DEFAULT_EXECUTABLE));
    object_release_stats(&releasing, &released);
    values[11] = enif_make_long(env, releasing);
    values[12] = enif_make_long(env, released);
    ERL_NIF_TERM map;

    enif_make_map_from_arrays(env, keys, values, sizeof(keys) / sizeof(keys[0]), &map);
    return map;
}

/* ------------------------------------------------------------------------ */

static bool
init_resources(ErlNifEnv *env)
{
    return worker_init_resources(env) && callback_init_resources(env) &&
           loop_init_resources(env) && object_init_resources(env) && stream_init_resources(env);
}

static int
load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    Dl_info self;

    make_atoms(env);
    /* C extensions (numpy...) resolve libpython's symbols globally, but the
     * VM loads us, and so libpython, with RTLD_LOCAL. */
    if (dlopen(PY_LIBRARY_PATH, RTLD_NOW | RTLD_GLOBAL) == NULL) {
        return 1;
    }
    /* Our threads run this library's code for the life of the process: it
     * must never be unloaded, even if the module is purged. */
    if (dladdr((void *)&load, &self) == 0 ||
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD) == NULL) {
        return 2;
    }
    return init_resources(env) ? 0 : 3;
}

static int
upgrade(ErlNifEnv *env, void **priv, void **old_priv, ERL_NIF_TERM info)
{
    make_atoms(env);
    return init_resources(env) ? 0 : 3;
}

static ErlNifFunc nif_funcs[] = {
    {"start", 1, start_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"submit", 2, submit_nif, 0},
    {"submit", 3, submit_nif, 0},
    {"submit", 4, submit_nif, 0},
    {"submit", 5, submit_nif, 0},
    {"poll", 1, request_poll_nif, 0},
    {"arm", 2, request_arm_nif, 0},
    {"disarm", 1, request_disarm_nif, 0},
    {"cancel", 1, request_cancel_nif, 0},
    {"demonitor", 1, request_demonitor_nif, 0},
    {"callback_reply", 2, callback_reply_nif, 0},
    {"submit_nested", 3, callback_submit_nested_nif, 0},
    {"submit_nested", 4, callback_submit_nested_nif, 0},
    {"submit_nested", 5, callback_submit_nested_nif, 0},
    {"stream_active", 2, stream_active_nif, 0},
    {"stream_cancel", 1, stream_cancel_nif, 0},
    {"info", 0, info_nif, 0},
    {"loop_attach", 1, loop_attach_nif, 0},
    {"loop_select", 1, loop_select_nif, 0},
    {"loop_ready", 1, loop_ready_nif, 0},
    {"loop_timer", 2, loop_timer_nif, 0},
    {"loop_post", 5, loop_post_nif, 0},
    {"loop_reply", 3, loop_reply_nif, 0},
    {"loop_stop", 1, loop_stop_nif, 0},
};

ERL_NIF_INIT(py_nif, nif_funcs, load, NULL, upgrade, NULL)
