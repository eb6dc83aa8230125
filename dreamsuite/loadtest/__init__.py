"""``dreamsuite loadtest``: load tests of the suite's gRPC services on Locust.

The command runs in two processes so that only one of them is gevent-patched:

- the command line (:mod:`~dreamsuite.loadtest.cli`, :mod:`~dreamsuite.loadtest.controller`),
  unpatched: reads the scenario and the SLO, follows the server's ``/metrics``, prints the
  summary and decides the exit code;
- the Locust process (``python -m dreamsuite.loadtest.run``), patched by gevent before grpc is
  imported: runs the users of :mod:`~dreamsuite.loadtest.users` (local, master or worker) and
  writes a snapshot of Locust's statistics for the command line to summarise.

Every call goes through :mod:`~dreamsuite.loadtest.calls`, which times it and reports it to
Locust's request event, so Locust's own statistics, CSV and HTML report see every call.

This package imports nothing at import time: ``python -m dreamsuite.loadtest.run`` must patch
before anything imports grpc.
"""
