"""Run in a subprocess by test_qcluster_redis: submits jobs or reports their state as JSON,
against whatever database and broker the environment configures."""
import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django_q.models import Task  # noqa: E402

from accounts.models import DataExport, Plan, User  # noqa: E402
from safeface.jobs import job_submit  # noqa: E402
from tests.jobapp.models import EchoJob, GpuEchoJob  # noqa: E402


def submit() -> dict:
    user = User.objects.create_user(email="cluster@example.com", password="x" * 20)
    user.plan = Plan.objects.get(slug="pro")  # Pro runs several jobs at once
    user.save()
    export = job_submit(DataExport(user=user))
    gpu = job_submit(GpuEchoJob(user=user, text="from the gpu cluster"), quota_metric="avatars", quota_amount=1)
    light = job_submit(EchoJob(user=user, text="from the default cluster", behaviour="slow"))
    return {"export": export.pk, "gpu": gpu.pk, "light": light.pk}


def status(ids: dict) -> dict:
    export = DataExport.objects.get(pk=ids["export"])
    gpu = GpuEchoJob.objects.get(pk=ids["gpu"])
    light = EchoJob.objects.get(pk=ids["light"])
    clusters = {
        t.args[0]: t.cluster for t in Task.objects.filter(func="safeface.jobs.run_next_job", success=True)
    }
    return {
        "export": [export.status, export.archive.name if export.archive else None, export.error],
        "gpu": [gpu.status, gpu.output.name if gpu.output else None, gpu.error, gpu.runs],
        "light": [light.status, light.output.name if light.output else None, light.error, light.runs],
        "clusters": clusters,
    }


if __name__ == "__main__":
    if sys.argv[1] == "submit":
        print(json.dumps(submit()))
    else:
        print(json.dumps(status(json.loads(sys.argv[2]))))
