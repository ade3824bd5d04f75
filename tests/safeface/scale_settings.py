"""Settings of the scale harness processes (tests/safeface/scale_harness.py): the test settings
(which add the echo jobs) with the job heartbeat back on as deployed. tests.settings turns the
heartbeat thread off for the in-process tests; the scale and fault runs need it, because the
sweeper tells a dead worker from a live one by its heartbeat."""
from tests.settings import *  # noqa: F403
from safeface.settings import JOB_HEARTBEAT_SECONDS  # noqa: F401  (read from the environment)
