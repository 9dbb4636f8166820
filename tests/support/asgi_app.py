"""The test project as an ASGI application, its tables created at start-up."""

from __future__ import annotations

import gc
import os

import django
from django.core.asgi import get_asgi_application
from django.core.management import call_command

django.setup()
call_command("migrate", run_syncdb=True, verbosity=0)
application = get_asgi_application()

if os.environ.get("DIFFS_ASGI_GC_FREEZE"):
    # What a long-running server may do once started (benchmarks/sse_latency.py
    # measures with and without): the objects of start-up leave the collector's
    # care, so a full collection walks only what was made since.
    gc.freeze()
