"""A minimal Django project for the tests: django-tasks' DatabaseBackend (PyPI django-tasks-db)
on the Postgres database named by DJANGO_TASKS_DATABASE_URL, two backends sharing its table
(`default` and `reports`). Run as DJANGO_SETTINGS_MODULE=helpers.django_tasks_settings with
tests/ on PYTHONPATH: `django-admin migrate`, `django-admin db_worker`."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

_url = urlsplit(os.environ.get("DJANGO_TASKS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))

SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_tasks", "django_tasks_db"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "postgres",
        "HOST": _url.hostname,
        "PORT": _url.port or 5432,
    }
}
_QUEUES = ["default", "mailers", "reports", "broken", "Mails with spaces 'quoted' ünï"]
TASKS = {
    "default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": _QUEUES},
    "reports": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": _QUEUES},
}
