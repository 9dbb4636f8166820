"""ASGI entry point: ``uvicorn example_project.asgi:application`` (the live page's event
stream then waits on the event loop instead of holding a thread per browser)."""

from __future__ import annotations

import gc
import os

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

application = get_asgi_application()
if settings.DEBUG:
    # As runserver does: the admin's CSS and JavaScript, for the demo only.
    application = ASGIStaticFilesHandler(application)

# Start-up's objects (Django, the apps, the URLconf) stay for the process's life: left
# out of the collector's full passes, which then walk only what came since. With many
# event streams open, a full pass over everything holds them all up for ~100 ms.
gc.freeze()
