/* Streams: the items of a Python iterable sent to an Erlang process one message each
 * (docs/streams.md).
 *
 * py:stream makes a REQ_STREAM request; the thread that runs it calls the function and
 * makes a stream of the iterator it returned (stream_create), whose reference is the
 * caller's `Ref'. Items are produced by pumps: REQ_STREAM_PUMP requests queued like any
 * call, each taking items while the consumer's credit (`active') lasts, sending
 * {py_stream, Ref, {data, Item}} for each, and ending with the credit or after a batch, so
 * that a stream shares the workers fairly and holds none while it waits for its consumer.
 * At most one pump per stream exists at a time (`pumping'); whatever the stream needs next
 * (more items, closing the iterator) is decided when its pump ends (stream_pump_ended).
 *
 * Lock order: the stream lock is taken before the request lock and the pool lock, never
 * after; never with the GIL wanted.
 */
#ifndef PY_STREAM_H
#define PY_STREAM_H

#include "py_common.h"
#include "py_request.h"

/* active => true. */
#define STREAM_ACTIVE_UNBOUNDED (-1L)

bool stream_init_resources(ErlNifEnv *env);

/* Makes the stream of iterable (GIL held), for req's caller, and keeps it in req->stream
 * (a reference of req's) for stream_started. Returns the stream's reference built in env,
 * or 0 with a Python exception set (iterable is not iterable). */
ERL_NIF_TERM stream_create(ErlNifEnv *env, request_t *req, PyObject *iterable, long active);

/* req, which made a stream, was answered (GIL held): the stream's first pump is queued; or
 * req was cancelled meanwhile (its caller never gets Ref), and the iterator is closed. */
void stream_started(request_t *req, bool cancelled);

/* Runs a pump (GIL held): sends items while the credit lasts. */
void stream_pump(request_t *pump);

/* A pump request ended, run or not (GIL held, its async exception cleared): queues the
 * next pump, or closes the iterator of a stream that was cancelled. */
void stream_pump_ended(request_t *pump);

/* NIF bodies: stream_active(Ref, N | true | false), stream_cancel(Ref). */
ERL_NIF_TERM stream_active_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM stream_cancel_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#endif
