from __future__ import annotations

import threading

import pytest
from django.db import connection

from accounts.models import UsageCounter
from accounts.quotas import LimitReached, check_media_limits, current_period, quota_reserve, usage_meters
from tests.conftest import make_user


@pytest.mark.django_db
def test_reservations_add_up_to_the_limit_and_not_beyond(owner):
    for _ in range(10):
        quota_reserve(user=owner, metric="avatars", amount=1)
    with pytest.raises(LimitReached) as error:
        quota_reserve(user=owner, metric="avatars", amount=1)
    assert "You have used 10 of your 10 monthly personas generated on the Free plan" in error.value.message
    assert UsageCounter.objects.get(user=owner).used == 10


@pytest.mark.django_db
def test_upload_bytes_message_is_human_readable(owner):
    with pytest.raises(LimitReached, match=r"needs 600\.0\xa0MB of upload volume, more than your Free plan's monthly 500\.0\xa0MB"):
        quota_reserve(user=owner, metric="upload_bytes", amount=600 * 1024**2)


@pytest.mark.django_db
def test_periods_are_separate(owner):
    from datetime import datetime, timezone

    october = datetime(2026, 10, 15, tzinfo=timezone.utc)
    november = datetime(2026, 11, 2, tzinfo=timezone.utc)
    quota_reserve(user=owner, metric="avatars", amount=10, now=october)
    quota_reserve(user=owner, metric="avatars", amount=10, now=november)
    assert sorted(UsageCounter.objects.values_list("period", "used")) == [("2026-10", 10), ("2026-11", 10)]


@pytest.mark.django_db
def test_media_limits_follow_the_plan(owner):
    check_media_limits(user=owner, width=4096, height=3000)
    with pytest.raises(LimitReached, match="images up to 4096 px"):
        check_media_limits(user=owner, width=4097, height=100)
    with pytest.raises(LimitReached, match="videos up to 30 s"):
        check_media_limits(user=owner, width=1280, height=720, duration_seconds=31)
    with pytest.raises(LimitReached, match="videos up to 1280 px"):
        check_media_limits(user=owner, width=1920, height=1080, duration_seconds=5)
    pro = make_user("pro@example.com", plan="pro")
    check_media_limits(user=pro, width=3840, height=2160, duration_seconds=600)


@pytest.mark.django_db
def test_meters_report_usage_against_limits(owner):
    quota_reserve(user=owner, metric="avatars", amount=8)
    meters = {m.metric: m for m in usage_meters(owner)}
    assert (meters["avatars"].used, meters["avatars"].limit, meters["avatars"].percent) == (8, 10, 80)
    assert meters["avatars"].level == "high"
    assert meters["upload_bytes"].human_limit == "500.0\xa0MB"
    assert (meters["jobs"].used, meters["jobs"].limit) == (0, 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_cannot_both_take_the_last_unit():
    assert connection.vendor == "postgresql"
    user = make_user("race@example.com")
    quota_reserve(user=user, metric="avatars", amount=9)
    for _round in range(5):
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def attempt():
            from django.db import connection as thread_connection

            try:
                barrier.wait()
                quota_reserve(user=user, metric="avatars", amount=1)
                outcomes.append("ok")
            except LimitReached:
                outcomes.append("refused")
            finally:
                thread_connection.close()

        threads = [threading.Thread(target=attempt) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected_ok = 1 if _round == 0 else 0
        assert outcomes.count("ok") == expected_ok, outcomes
        assert UsageCounter.objects.get(user=user, period=current_period()).used == 10
