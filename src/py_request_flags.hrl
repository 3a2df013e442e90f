%% The flags of a request, as c_src/py_request.h defines them (REQ_RETURN_OBJECT...): how its
%% answer is made and delivered. py builds them from a call's options; py_pool reads them.
-define(RETURN_OBJECT, 1).
-define(DETAILED_ERRORS, 2).
-define(DETACHED, 4).
-define(DISCARD, 8).
