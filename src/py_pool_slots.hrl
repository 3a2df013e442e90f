%% A process pool's slots (py_pool_manager): an atomics array with one element per worker,
%% its value one of these, and a last element counting the calls queued in the manager.
%% Callers claim IDLE -> BUSY (py_pool:claim/2); workers and the manager set the rest.
-define(IDLE, 0).
-define(BUSY, 1).
-define(NO_WORKER, 2).
-define(QUEUED(Size), (Size + 1)).
