"""Configure Django for a benchmark run: PostgreSQL, a real Redis, the bench app.

Shared by the scripts in this folder; each calls :func:`configure` before importing
models. The Redis db given is flushed before and after a run, so db 0 is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def ensure_database(name: str, host: str, user: str) -> None:
    """Create the PostgreSQL database ``name`` if it does not exist."""
    import psycopg

    with psycopg.connect(host=host, user=user, dbname="postgres", autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not found:
            conn.execute(f'CREATE DATABASE "{name}"')


def configure(redis_url: str, pg_name: str, pg_host: str = "127.0.0.1") -> None:
    """Set up Django, recreate the bench tables and flush the Redis db."""
    import django
    from django.conf import settings

    ensure_database(pg_name, pg_host, "postgres")
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "diffs", "bench_app"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": pg_name,
                "USER": "postgres",
                "HOST": pg_host,
            }
        },
        DIFFS_SETTINGS={"url": redis_url},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()

    from bench_app import models as bench_models
    from django.core.management import call_command
    from django.db import connection

    import diffs

    client = diffs.get_connection()
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        sys.exit("Refusing to use Redis db 0: pass a URL ending in /<another db>.")
    client.flushdb()
    call_command("migrate", "diffs", verbosity=0)
    # Every concrete model of the bench app, Author (referenced by the others) first.
    created = [
        bench_models.Author,
        *(
            model
            for model in vars(bench_models).values()
            if isinstance(model, type)
            and issubclass(model, bench_models.models.Model)
            and not model._meta.abstract
            and model is not bench_models.Author
            and model._meta.app_label == "bench_app"
        ),
    ]
    with connection.schema_editor() as editor:
        for model in reversed(created):
            for table in (model._meta.db_table, *_m2m_tables(model)):
                editor.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        for model in created:
            editor.create_model(model)


def _m2m_tables(model: type) -> list[str]:
    return [field.remote_field.through._meta.db_table for field in model._meta.local_many_to_many]


def describe_machine() -> str:
    """One line: CPUs, Python, PostgreSQL and Redis versions."""
    import os
    import platform

    from django.db import connection

    import diffs

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    redis_version = diffs.get_connection().info("server")["redis_version"]
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"PostgreSQL {pg_version}, redis-server {redis_version}"
    )
