"""``python manage.py healthcheck [--worker] [--json]``: readiness for processes without an HTTP
server (django-q workers), for a container HEALTHCHECK or a Kubernetes exec probe.

Checks the database, the broker and storage; ``--worker`` adds the model files the worker needs
(``HEALTH_MODEL_GROUPS``, presence and size). Exit status 0 when every check passes, 1 otherwise.
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from safeface import health


class Command(BaseCommand):
    help = "Checks database, broker and storage (and model files with --worker); exits 1 on any failure."
    requires_system_checks: list[str] = []  # a probe every few seconds: only what it reports

    def add_arguments(self, parser) -> None:
        parser.add_argument("--worker", action="store_true", help="also check the model files a worker needs")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the result as one JSON document")

    def handle(self, *args, worker: bool = False, as_json: bool = False, **options) -> None:
        results = health.run_checks(health.WORKER_CHECKS if worker else health.WEB_CHECKS)
        document = health.as_document(results)
        if as_json:
            self.stdout.write(json.dumps(document))
        else:
            for name, result in results.items():
                mark = self.style.SUCCESS("ok  ") if result.ok else self.style.ERROR("FAIL")
                self.stdout.write(f"{mark} {name:<9} {result.ms:>8.1f} ms  {result.detail}")
        if document["failing"]:
            if not as_json:
                self.stderr.write(f"unhealthy: {', '.join(document['failing'])}")
            raise SystemExit(1)
