"""ASGI entry point: ``uvicorn example_project.asgi:application`` (the live page's event
stream then waits on the event loop instead of holding a thread per browser)."""

from __future__ import annotations

import os

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

application = get_asgi_application()
if settings.DEBUG:
    # As runserver does: the admin's CSS and JavaScript, for the demo only.
    application = ASGIStaticFilesHandler(application)
