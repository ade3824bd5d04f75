"""Locust users for bench/load.py: signed-in people who open their persona library and watch
their generations progress the way the page does it, an htmx poll of the job-status partial
about once a second.

bench/load.py prepares the people (rows and session cookies) and passes them in
LOCUST_PEOPLE_FILE (JSON: a list of {"session": cookie value, "jobs": [active job ids]} plus the
cookie's name); every response time after the last user has started is written to
LOCUST_SAMPLES_FILE, from LOCUST_SETTLE_SECONDS after the last user started, so that the
bench computes exact percentiles (locust's own table rounds times above 100 ms).
"""
from __future__ import annotations

import itertools
import json
import os
import random
import time

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

_setup = json.loads(open(os.environ["LOCUST_PEOPLE_FILE"]).read())
_people = itertools.cycle(_setup["people"])
_samples: dict[str, list[tuple[float, float]]] = {}  # name: [(unix time, ms)]
_errors: dict[str, int] = {}
_recording_from: float | None = None


@events.spawning_complete.add_listener
def _start_recording(user_count: int, **kwargs) -> None:
    # Users started within the ramp all fire their first requests together; LOCUST_SETTLE_SECONDS
    # after the last one started, arrivals look like a browser population again.
    global _recording_from
    _recording_from = time.time() + float(os.environ.get("LOCUST_SETTLE_SECONDS", "0"))


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, **kwargs) -> None:
    now = time.time()
    if _recording_from is None or now < _recording_from:
        return
    _samples.setdefault(name, []).append((now, response_time))
    if exception is not None:
        _errors[name] = _errors.get(name, 0) + 1


@events.quitting.add_listener
def _write(environment, **kwargs) -> None:
    path = os.environ.get("LOCUST_SAMPLES_FILE")
    if path:
        with open(path, "w") as handle:
            json.dump({"samples_ms": _samples, "errors": _errors}, handle)


class Person(FastHttpUser):
    wait_time = between(0.8, 1.2)  # htmx polls every 1 s; people read pages for about as long

    def on_start(self) -> None:
        person = next(_people)
        self.cookie = {"Cookie": f"{_setup['cookie_name']}={person['session']}"}
        self.jobs = person["jobs"]
        self.library()

    @task(1)
    def library(self) -> None:
        with self.client.get("/personas/", headers=self.cookie, name="library page", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif "Your personas" not in response.text or 'data-testid="avatar-card"' not in response.text:
                response.failure("not the library page with personas")

    @task(4)
    def poll(self) -> None:
        job = random.choice(self.jobs)
        url = f"/personas/generations/{job}/"
        headers = {
            **self.cookie,
            "HX-Request": "true",
            "HX-Trigger": "job-status",
            "HX-Target": "job-status",
            "HX-Current-URL": f"{self.host}{url}",
        }
        with self.client.get(url, headers=headers, name="job-status poll", catch_response=True) as response:
            # 200 while the job runs; 286 (htmx: stop polling) once it has finished.
            if response.status_code not in (200, 286):
                response.failure(f"status {response.status_code}")
            elif not response.text.lstrip().startswith('<section id="job-status"'):
                response.failure("not the job-status partial")
