"""The test project as an ASGI application, its tables created at start-up."""

from __future__ import annotations

import django
from django.core.asgi import get_asgi_application
from django.core.management import call_command

django.setup()
call_command("migrate", run_syncdb=True, verbosity=0)
application = get_asgi_application()
