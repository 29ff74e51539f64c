"""The one pod-id validator: what it accepts, and the message for everything it refuses."""

from __future__ import annotations

import pytest

from airflow_provider_prime import pod_ids
from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.pod_ids import (
    NOTHING_RENDERED,
    PodIds,
    pod_ids_from,
    unique_ids,
    validate_pod_ids,
)


class TestRequestedPodIds:
    def test_one_id(self):
        assert validate_pod_ids("abc") == ["abc"]

    def test_list_is_deduplicated_in_order_and_trimmed(self):
        assert validate_pod_ids(["b", " a\n", "b", "a"]) == ["b", "a"]

    @pytest.mark.parametrize("text", ["['a', 'b', 'a']", '["a", "b"]', "  ['a', 'b']\n"])
    def test_list_rendered_as_text_is_read_back(self, text):
        assert validate_pod_ids(text) == ["a", "b"]

    def test_tuple_is_accepted(self):
        assert validate_pod_ids(("a", "b")) == ["a", "b"]

    @pytest.mark.parametrize(
        ("value", "words"),
        [
            ([], "empty"),
            ("", "blank"),
            ("   ", "blank"),
            (["a", " "], "pod_ids[1] is blank"),
            (["a", 7], "pod_ids[1] must be a string, not int"),
            ([None], "pod_ids[0] is None"),
            (42, "not int"),
            ({"a": 1}, "not dict"),
            ("[a, b]", "render_template_as_native_obj"),
            ("[1, 2]", "pod_ids[0] must be a string, not int"),
            ("[]", "empty"),
            ("['a', '']", "pod_ids[1] is blank"),
            ("a,b", "not a pod id"),
            (["a b"], "pod_ids[0] is not a pod id"),
        ],
    )
    def test_bad_values_are_clear_errors(self, value, words):
        with pytest.raises(PrimeConfigError, match="pod_ids") as caught:
            validate_pod_ids(value)
        assert words in str(caught.value)

    @pytest.mark.parametrize(
        ("value", "where"),
        [
            (None, "pod_ids is None"),
            ("None", "pod_ids is 'None'"),
            ("None\n", "pod_ids is 'None\\n'"),
            ("null", "pod_ids is 'null'"),
            ("", "pod_ids is blank"),
            ("[]", "pod_ids is empty"),
            ([], "pod_ids is empty"),
            (["a", None], "pod_ids[1] is None"),
            (["a", "None"], "pod_ids[1] is 'None'"),
            ("['a', None]", "pod_ids[1] is None"),
            ('["null"]', "pod_ids[0] is 'null'"),
        ],
    )
    def test_the_rendering_of_nothing_names_the_likely_cause(self, value, where):
        with pytest.raises(PrimeConfigError) as caught:
            validate_pod_ids(value)
        message = str(caught.value)
        assert where in message
        assert NOTHING_RENDERED in message
        assert "xcom_pull that found no value" in message

    def test_unique_ids_keeps_first_seen_order(self):
        assert unique_ids(["c", "a", "c", "b", "a"]) == ["c", "a", "b"]


class TestValidatedValue:
    def test_validated_ids_are_a_pod_ids_value_that_is_not_checked_again(self, monkeypatch):
        ids = validate_pod_ids(["a", "b"])
        assert isinstance(ids, PodIds)
        monkeypatch.setattr(pod_ids, "_rendered_list", None)  # any second look would fail
        assert validate_pod_ids(ids) is ids

    def test_a_value_travels_as_a_plain_list(self):
        import json

        try:
            from airflow.sdk.serde import serialize
        except ImportError:  # Airflow 3.1: the serializer of trigger kwargs lived in airflow.serialization
            from airflow.serialization.serde import serialize

        ids = validate_pod_ids(["a", "b"])
        assert ids == ["a", "b"]
        assert json.dumps(ids) == '["a", "b"]'
        assert serialize({"pod_ids": ids}) == {"pod_ids": ["a", "b"]}


class TestPodIdsFrom:
    """What an operator collects from upstream tasks: the create's return value, mapped or not."""

    @pytest.mark.parametrize(
        ("value", "ids"),
        [
            ("a", ["a"]),
            (["a", "b", "a"], ["a", "b"]),
            ({"a": {"status": "ACTIVE"}}, ["a"]),  # the create operator's return value
            ([{"a": {}}, None, {"b": {}}], ["a", "b"]),  # a mapped create's, one index without a pod
            ("['a', 'b']", ["a", "b"]),
            ([None, None], []),
            (None, []),
            ([], []),
        ],
    )
    def test_every_shape_a_dag_hands_over(self, value, ids):
        found = pod_ids_from(value)
        assert isinstance(found, PodIds)
        assert found == ids

    @pytest.mark.parametrize("value", ["None", "", "a b", 7, [["a", 3]], {"a,b": {}}])
    def test_bad_ids_get_the_sensors_message(self, value):
        with pytest.raises(PrimeConfigError) as collected:
            pod_ids_from(value)
        flat = value if not isinstance(value, (list, dict)) else None
        if flat is not None:
            with pytest.raises(PrimeConfigError) as validated:
                validate_pod_ids(flat)
            assert str(collected.value) == str(validated.value)


class TestRenderedMapping:
    """A mapping rendered as text is the create operator's return value: its keys are the ids."""

    def test_a_rendered_return_value_gives_its_pod_ids(self):
        assert validate_pod_ids("{'pod-a': {'status': 'ACTIVE'}, 'pod-b': {}}") == ["pod-a", "pod-b"]

    def test_an_empty_mapping_is_the_rendering_of_nothing(self):
        with pytest.raises(PrimeConfigError, match="empty"):
            validate_pod_ids("{}")

    def test_a_brace_is_never_part_of_an_id(self):
        with pytest.raises(PrimeConfigError, match="not a pod id"):
            validate_pod_ids("pod{1}")
