"""Packaging for django-diffs.

Metadata lives here (not in pyproject.toml) because the project layout asks for a
classic ``setup.py``; tool configuration lives in ``setup.cfg`` and ``.ruff.toml``.
"""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version() -> str:
    # Parsed rather than imported: importing diffs would import Django.
    source = (HERE / "diffs" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', source, re.MULTILINE)
    if match is None:
        msg = "diffs/__init__.py has no __version__ line"
        raise RuntimeError(msg)
    return match.group(1)


TEST_REQUIRES = ["fakeredis[lua]>=2.20"]
DEV_REQUIRES = [
    *TEST_REQUIRES,
    "pytest>=8",
    "pytest-django>=4.9",
    "pytest-cov>=5",
    "hypothesis>=6.100",
    "psycopg[binary]>=3.1",
    "mypy>=1.10",
    "django-stubs>=5.0",
    "ruff>=0.6",
    "docutils>=0.22",
    "djangorestframework>=3.15",
    # The Celery pattern of diffs.context() is tested with a task run eagerly.
    "celery>=5.3",
    # The admin pages are tested in headless Chromium (Debian's chromium-driver).
    "selenium>=4.20",
    # The event stream is tested, and benchmarked, under a real ASGI server.
    "uvicorn>=0.30",
]

setup(
    name="django-diffs",
    version=read_version(),
    description=(
        "Record every change to a Django model in Redis for a fixed time window, "
        "so clients can ask what changed instead of re-downloading everything."
    ),
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    author="Sam Bolgert and the django-diffs developers",
    url="https://github.com/linuxlewis/django-diffs",
    license="MIT",
    packages=find_packages(include=["diffs", "diffs.*"]),
    package_data={"diffs": ["py.typed"]},
    include_package_data=True,
    zip_safe=False,
    python_requires=">=3.10",
    install_requires=[
        "Django>=5.2",
        "django-dirtyfields>=1.9",
        "redis>=5.0",
    ],
    extras_require={
        "test": TEST_REQUIRES,
        "dev": DEV_REQUIRES,
        "drf": ["djangorestframework>=3.15"],
        # redis-py parses replies in C: reads of many diffs take about a quarter less
        # time; saves gain nothing measurable (benchmarks/RESULTS.md).
        "hiredis": ["redis[hiredis]>=5.0"],
        "bench": ["psycopg[binary]>=3.1", "pyinstrument>=4.6"],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Web Environment",
        "Framework :: Django",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Framework :: Django :: 6.1",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Typing :: Typed",
    ],
)
