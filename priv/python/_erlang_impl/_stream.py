"""Async iterables behind ``py:stream`` (c_src/py_stream.c, docs/streams.md).

A stream's items are taken by pumps, each a request of its own that ends when the consumer's
credit or the batch does, so that a stream holds no worker while it waits for its consumer.
An async iterator is therefore driven on a new ErlangEventLoop by each pump, and suspended
between pumps at a ``yield``, where it awaits nothing that belongs to a loop.
"""

from _erlang_impl import _loop


def pump_async(ait, emit):
    """Awaits items of ``ait`` and hands each to ``emit`` while it returns True. Returns True
    when ``ait`` is exhausted, False when the pump stopped first."""
    return _run(ait, _pump(ait, emit))


async def _pump(ait, emit):
    while True:
        try:
            item = await ait.__anext__()
        except StopAsyncIteration:
            return True
        if not emit(item):
            return False


def close_async(ait):
    """Closes ``ait`` (its ``finally`` blocks run) if it can be closed."""
    aclose = getattr(ait, "aclose", None)
    if aclose is not None:
        _run(ait, aclose())


def _run(ait, coro):
    loop = _loop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            # A pump stopped by its cancellation (CallCancelled landing in the loop's own
            # code) leaves its task waiting in ``ait``'s __anext__: cancelling it unwinds
            # ``ait`` there (its ``finally`` runs), where aclose() alone would find it still
            # running.
            _loop._cancel_all_tasks(loop)
            # The loop registered ``ait`` when it first ran it: it outlives this loop, which
            # must not close it on shutdown. Async generators that ``ait`` started are closed.
            loop._asyncgens.discard(ait)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
