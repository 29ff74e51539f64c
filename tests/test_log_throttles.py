"""When a wait writes a progress line, and what it says while the API cannot be reached."""

from __future__ import annotations

from airflow_provider_prime.log_throttles import ApiTrouble, ProgressThrottle


class TestProgressThrottle:
    def test_a_new_line_is_due_at_once(self):
        throttle = ProgressThrottle(heartbeat=300)
        assert throttle.due("0/1 pods ready; a: pod is PENDING", now=0)
        assert throttle.due("0/1 pods ready; a: ACTIVE, installation ACTIVE 10%", now=1)

    def test_the_same_line_waits_for_the_heartbeat(self):
        throttle = ProgressThrottle(heartbeat=300)
        assert throttle.due("same", now=0)
        assert not throttle.due("same", now=299)
        assert throttle.due("same", now=300)
        assert not throttle.due("same", now=301)  # the heartbeat counts from the last line written

    def test_a_line_coming_back_is_news(self):
        throttle = ProgressThrottle(heartbeat=300)
        assert throttle.due("a", now=0)
        assert throttle.due("b", now=1)
        assert throttle.due("a", now=2)


class TestApiTrouble:
    def test_trouble_is_said_once_when_it_starts_then_at_the_repeat_rate_with_a_count(self):
        trouble = ApiTrouble(repeat=60)
        lines = [trouble.failed(ConnectionError(f"refused #{n}"), now=n * 15.0) for n in range(9)]
        assert lines[0] == "Cannot reach the Prime API, will keep trying: refused #0"
        said = [(n, line) for n, line in enumerate(lines) if line]
        assert said == [
            (0, lines[0]),
            (4, "Prime API still unreachable after 5 attempts over 60 s: refused #4"),
            (8, "Prime API still unreachable after 9 attempts over 2.0 min: refused #8"),
        ]

    def test_the_end_of_trouble_is_said_once(self):
        trouble = ApiTrouble(repeat=60)
        trouble.failed(ConnectionError("refused"), now=100)
        trouble.failed(ConnectionError("refused"), now=400)
        assert trouble.answered(now=520) == "Prime API reachable again after 2 failed attempts over 7.0 min"
        assert trouble.answered(now=530) is None
        assert trouble.last_error is None

    def test_no_trouble_no_line(self):
        assert ApiTrouble().answered(now=1) is None

    def test_new_trouble_after_a_recovery_starts_over(self):
        trouble = ApiTrouble(repeat=60)
        trouble.failed(ConnectionError("one"), now=0)
        trouble.answered(now=10)
        assert (
            trouble.failed(ConnectionError("two"), now=20)
            == "Cannot reach the Prime API, will keep trying: two"
        )
        assert trouble.attempts == 1
