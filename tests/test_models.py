"""The API payload models: tolerant of what the API adds, strict about the requests we send."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.models import (
    InstallationState,
    OfferPage,
    Pod,
    PodPage,
    PodRequest,
    PodState,
    PodStatus,
    PodStatusPage,
    PortMapping,
    ResourceRange,
    WhoAmI,
)
from tests.payloads import make_offer, offer_payload


def pod_payload(**changes: Any) -> dict[str, Any]:
    """A ``GET /pods/{id}`` answer with the required keys and the useful optional ones."""
    payload: dict[str, Any] = {
        "id": "pod-1",
        "name": "train-1",
        "gpuName": "H100_80GB",
        "gpuCount": 8,
        "status": "ACTIVE",
        "createdAt": "2026-12-01T10:00:00Z",
        "providerType": "runpod",
        "resources": {"disk": 100, "vcpus": 104, "memory": 752},
        "ip": "10.0.0.1",
        "socket": "SXM5",
        "type": "HOSTED",
        "installationStatus": "FINISHED",
        "installationProgress": 100,
        "sshConnection": "root@10.0.0.1 -p 22",
        "priceHr": 19.92,
        "teamId": None,
        "primePortMapping": [
            {"internal": "22", "external": "40022", "protocol": "TCP", "description": "SSH", "usedBy": "SSH"}
        ],
        "jupyterPassword": "hunter2",
        "isSpot": False,
    }
    payload.update(changes)
    return payload


class TestPodStatus:
    def test_unknown_fields_are_ignored_and_aliases_or_names_both_work(self):
        wire = PodStatus.model_validate(
            {"podId": "p", "providerType": "runpod", "status": "ACTIVE", "priceHr": 2.0, "newThing": {}}
        )
        by_name = PodStatus(pod_id="p", provider_type="runpod", status="ACTIVE")
        assert wire == by_name
        assert not hasattr(wire, "newThing")

    def test_unknown_enum_values_are_kept_as_text(self):
        status = PodStatus.model_validate(
            {
                "podId": "p",
                "providerType": "dc_brand_new",
                "status": "HIBERNATING",
                "installationStatus": "PAUSED",
            }
        )
        assert (status.status, status.provider_type, status.installation_status) == (
            "HIBERNATING",
            "dc_brand_new",
            "PAUSED",
        )

    def test_enum_members_are_stored_as_their_text(self):
        status = PodStatus(
            pod_id="p",
            provider_type="runpod",
            status=PodState.ACTIVE,
            installation_status=InstallationState.FINISHED,
        )
        assert type(status.status) is str
        assert type(status.installation_status) is str
        assert status.status == "ACTIVE"

    @pytest.mark.parametrize(
        ("ssh", "expected"),
        [
            (None, []),
            ("root@a", ["root@a"]),
            (["root@a", None, "root@c"], ["root@a", None, "root@c"]),
            ([None], [None]),
        ],
    )
    def test_per_node_lists_keep_every_node(self, ssh, expected):
        status = PodStatus(pod_id="p", provider_type="runpod", status="ACTIVE", ssh_connection=ssh, ip=ssh)
        assert status.ssh_connections == expected
        assert status.ips == expected

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (40, 40),
            (41.6, 42),
            (None, None),
            ("50", None),
            (True, None),
            (float("nan"), None),
            (float("inf"), None),
        ],
    )
    def test_progress_is_rounded_or_dropped_never_an_error(self, raw, expected):
        status = PodStatus.model_validate(
            {"podId": "p", "providerType": "runpod", "status": "ACTIVE", "installationProgress": raw}
        )
        assert status.installation_progress == expected

    def test_a_missing_required_key_is_an_error(self):
        with pytest.raises(ValidationError, match="podId"):
            PodStatus.model_validate({"providerType": "runpod", "status": "ACTIVE"})

    def test_frozen(self):
        status = PodStatus(pod_id="p", provider_type="runpod", status="ACTIVE")
        with pytest.raises(ValidationError):
            status.status = "ERROR"  # type: ignore[misc]

    def test_status_page_treats_null_data_as_no_pods(self):
        assert PodStatusPage.model_validate({"data": None, "status": None}).pods == []
        page = PodStatusPage.model_validate(
            {"data": [{"podId": "p", "providerType": "x", "status": "ACTIVE"}]}
        )
        assert [p.pod_id for p in page.pods] == ["p"]


class TestPortMapping:
    def test_numeric_ports_become_text(self):
        mapping = PortMapping.model_validate({"internal": 22, "external": 40022, "protocol": "TCP"})
        assert (mapping.internal, mapping.external) == ("22", "40022")
        assert mapping.description is None
        assert mapping.used_by is None

    def test_dumps_back_to_the_wire_names(self):
        mapping = PortMapping(
            internal="8888", external="48888", protocol="TCP", description=None, used_by="JUPYTER"
        )
        assert mapping.model_dump(by_alias=True) == {
            "internal": "8888",
            "external": "48888",
            "protocol": "TCP",
            "description": None,
            "usedBy": "JUPYTER",
        }


class TestPod:
    def test_parses_the_documented_shape(self):
        pod = Pod.model_validate(pod_payload())
        assert (pod.id, pod.name, pod.gpu_name, pod.gpu_count, pod.type) == (
            "pod-1",
            "train-1",
            "H100_80GB",
            8,
            "HOSTED",
        )
        assert pod.price_hr == 19.92
        assert pod.prime_port_mapping[0].used_by == "SSH"
        assert pod.created_at == "2026-12-01T10:00:00Z"

    def test_the_jupyter_password_stays_out_of_the_repr(self):
        pod = Pod.model_validate(pod_payload())
        assert pod.jupyter_password == "hunter2"
        assert "hunter2" not in repr(pod)

    def test_only_id_status_and_provider_are_demanded(self):
        pod = Pod.model_validate(
            {"id": "p", "status": "PROVISIONING", "providerType": "x", "primePortMapping": None}
        )
        assert pod.prime_port_mapping == []
        assert pod.ssh_connections == []
        with pytest.raises(ValidationError, match="id"):
            Pod.model_validate({"status": "ACTIVE", "providerType": "x"})

    def test_timestamps_accept_text_or_datetime(self):
        when = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
        pod = Pod(id="p", status="TERMINATED", provider_type="x", created_at=when, terminated_at=None)
        assert pod.created_at == "2026-12-01T10:00:00+00:00"
        assert pod.terminated_at is None

    def test_multi_node_lists_and_to_status_give_the_readiness_view(self):
        pod = Pod.model_validate(
            pod_payload(
                sshConnection=["root@a -p 22", None],
                ip=["10.0.0.1", None],
                installationStatus="ACTIVE",
                installationProgress=73.4,
            )
        )
        status = pod.to_status()
        assert status == PodStatus(
            pod_id="pod-1",
            provider_type="runpod",
            status="ACTIVE",
            ssh_connection=["root@a -p 22", None],
            ip=["10.0.0.1", None],
            installation_status="ACTIVE",
            installation_progress=73,
        )
        assert pod.ssh_connections == status.ssh_connections == ["root@a -p 22", None]
        assert pod.ips == ["10.0.0.1", None]

    def test_unknown_statuses_survive(self):
        pod = Pod.model_validate(pod_payload(status="MIGRATING", type="SPOT_HOSTED", providerType="dc_new"))
        assert (pod.status, pod.type, pod.provider_type) == ("MIGRATING", "SPOT_HOSTED", "dc_new")


class TestPages:
    @pytest.mark.parametrize("spelling", ["total_count", "totalCount"])
    def test_pod_page_accepts_both_total_count_spellings(self, spelling):
        page = PodPage.model_validate({spelling: 3, "offset": 0, "limit": 100, "data": [pod_payload()]})
        assert page.total_count == 3
        assert [p.id for p in page.data] == ["pod-1"]

    def test_pod_page_null_data_is_empty_and_dumps_snake_case_total(self):
        page = PodPage.model_validate({"total_count": 0, "offset": 0, "limit": 100, "data": None})
        assert page.data == []
        assert page.model_dump(by_alias=True) == {"total_count": 0, "offset": 0, "limit": 100, "data": []}

    @pytest.mark.parametrize("spelling", ["total_count", "totalCount"])
    def test_offer_page_accepts_both_spellings_and_dumps_camel_case(self, spelling):
        page = OfferPage.model_validate({"items": [offer_payload()], spelling: 1})
        assert page.total_count == 1
        assert [o.cloud_id for o in page.items] == ["h100-sxm5-8"]
        assert "totalCount" in page.model_dump(by_alias=True)

    def test_offer_page_null_items_is_empty(self):
        assert OfferPage.model_validate({"items": None, "totalCount": 0}).items == []

    @pytest.mark.parametrize("body", [{}, {"data": [], "status": "ok"}, {"error": "up", "totalCount": 0}])
    def test_offer_page_without_items_is_invalid_not_empty(self, body):
        with pytest.raises(ValidationError, match="items"):
            OfferPage.model_validate(body)


class TestGpuOffer:
    def test_parses_the_documented_shape(self):
        offer = make_offer()
        assert (offer.cloud_id, offer.gpu_type, offer.gpu_count, offer.socket) == (
            "h100-sxm5-8",
            "H100_80GB",
            8,
            "SXM5",
        )
        assert (offer.provider, offer.data_center, offer.country, offer.region) == (
            "runpod",
            "US-CA-2",
            "US",
            "united_states",
        )
        assert offer.disk == ResourceRange(
            min_count=50, default_count=100, max_count=1000, step=10, price_per_unit=0.0001
        )
        assert offer.vcpu.default_count == 104
        assert offer.prices.currency == "USD"
        assert offer.images == ["ubuntu_22_cuda_12", "cuda_12_4_pytorch_2_5"]

    @pytest.mark.parametrize(
        ("prices", "expected"),
        [
            ({"onDemand": 2.0, "communityPrice": 1.5}, 1.5),
            ({"onDemand": 2.0, "communityPrice": None}, 2.0),
            ({"onDemand": None, "communityPrice": 0.0}, 0.0),
            ({}, None),
        ],
    )
    def test_price_is_community_else_on_demand(self, prices, expected):
        assert make_offer(prices=prices).prices.price == expected

    def test_tolerates_nulls_and_new_values(self):
        offer = make_offer(
            images=None, stockStatus="Backordered", security="confidential", socket=None, region=None
        )
        assert offer.images == []
        assert (offer.stock_status, offer.security, offer.socket) == ("Backordered", "confidential", None)

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (50, None),
            (1000, None),
            (60, None),
            (40, "below the minimum 50"),
            (1010, "above the maximum 1000"),
            (55, "not 50 plus a multiple of 10"),
        ],
    )
    def test_resource_range_problems(self, value, problem):
        assert make_offer().disk.problem(value) == problem

    def test_resource_range_without_bounds_allows_anything(self):
        assert ResourceRange().problem(7) is None
        assert ResourceRange(step=4).problem(6) == "not a multiple of 4"
        assert ResourceRange().describe() == "any to any"


#: The create body of LIFECYCLE.md ("as the CLI sends it"), key for key.
CLI_BODY: dict[str, Any] = {
    "pod": {
        "name": "...",
        "cloudId": "...",
        "gpuType": "H100_80GB",
        "socket": "SXM5",
        "gpuCount": 1,
        "diskSize": 100,
        "vcpus": 16,
        "memory": 128,
        "image": "ubuntu_22_cuda_12",
        "dataCenterId": "...",
        "maxPrice": None,
        "country": None,
        "security": None,
        "jupyterPassword": None,
        "autoRestart": False,
        "customTemplateId": None,
        "envVars": [{"key": "K", "value": "V"}],
    },
    "provider": {"type": "<offer's provider>"},
    "disks": None,
    "team": None,
}


class TestPodRequest:
    def test_a_full_request_writes_the_cli_body(self):
        request = PodRequest(
            name="...",
            cloud_id="...",
            gpu_type="H100_80GB",
            socket="SXM5",
            gpu_count=1,
            disk_size=100,
            vcpus=16,
            memory=128,
            image="ubuntu_22_cuda_12",
            data_center_id="...",
            env_vars={"K": "V"},
            provider_type="<offer's provider>",
        )
        body = request.to_body()
        assert body == CLI_BODY
        assert list(body["pod"]) == list(CLI_BODY["pod"])

    def test_from_offer_copies_the_offer_and_defaults_the_sizes(self):
        request = PodRequest.from_offer(make_offer(), name="train-1")
        pod = request.to_body()["pod"]
        assert {k: pod[k] for k in ("cloudId", "gpuType", "socket", "gpuCount", "dataCenterId")} == {
            "cloudId": "h100-sxm5-8",
            "gpuType": "H100_80GB",
            "socket": "SXM5",
            "gpuCount": 8,
            "dataCenterId": "US-CA-2",
        }
        assert (pod["country"], pod["security"]) == ("US", "secure_cloud")
        assert (pod["diskSize"], pod["vcpus"], pod["memory"]) == (100, 104, 752)
        assert pod["image"] == "ubuntu_22_cuda_12"
        assert pod["envVars"] == []
        assert request.to_body()["provider"] == {"type": "runpod"}
        assert request.to_body()["team"] is None

    def test_from_offer_takes_valid_overrides(self):
        request = PodRequest.from_offer(
            make_offer(),
            name="train-1",
            image="cuda_12_4_pytorch_2_5",
            disk_size=500,
            vcpus=16,
            memory=100,
            env_vars={"WANDB_MODE": "offline", "SEED": "1"},
            team_id="team-9",
            max_price=25,
        )
        body = request.to_body()
        assert (
            body["pod"]["image"],
            body["pod"]["diskSize"],
            body["pod"]["vcpus"],
            body["pod"]["memory"],
        ) == (
            "cuda_12_4_pytorch_2_5",
            500,
            16,
            100,
        )
        assert body["pod"]["envVars"] == [
            {"key": "WANDB_MODE", "value": "offline"},
            {"key": "SEED", "value": "1"},
        ]
        assert body["pod"]["maxPrice"] == 25
        assert body["team"] == {"teamId": "team-9"}

    def test_image_defaults_to_the_offers_first_when_it_lacks_the_base_image(self):
        offer = make_offer(images=["pytorch_only"])
        assert PodRequest.from_offer(offer, name="n").image == "pytorch_only"

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            (
                {"disk_size": 20},
                r"disk_size=20 does not fit offer h100-sxm5-8: below the minimum 50 "
                r"\(allowed: 50 to 1000 in steps of 10\)",
            ),
            ({"disk_size": 1055}, "disk_size=1055 .* above the maximum 1000"),
            ({"vcpus": 12}, r"vcpus=12 .* not 8 plus a multiple of 8 \(allowed: 8 to 208 in steps of 8\)"),
            ({"memory": 2000}, r"memory=2000 .* above the maximum 1504 \(allowed: 64 to 1504\)"),
            ({"disk_size": "big"}, "disk_size='big' is not a whole number"),
            (
                {"image": "windows"},
                "image='windows' is not one of the images of offer h100-sxm5-8: "
                "ubuntu_22_cuda_12, cuda_12_4_pytorch_2_5",
            ),
            ({"name": "  "}, "name: a pod needs a non-empty name"),
            ({"max_price": 0}, "max_price: Input should be greater than 0"),
            (
                {"custom_template_id": "tpl-1", "image": "ubuntu_22_cuda_12"},
                "with custom_template_id the image must be 'custom_template'",
            ),
            ({"image": "custom_template"}, "needs a custom_template_id"),
        ],
    )
    def test_from_offer_refuses_what_the_offer_does_not_allow(self, override, message):
        arguments: dict[str, Any] = {"name": "train-1", **override}
        with pytest.raises(PrimeConfigError, match=message):
            PodRequest.from_offer(make_offer(), **arguments)

    def test_a_custom_template_gets_the_template_image(self):
        request = PodRequest.from_offer(make_offer(), name="n", custom_template_id="tpl-1")
        assert (request.image, request.custom_template_id) == ("custom_template", "tpl-1")

    @pytest.mark.parametrize(
        ("env_vars", "message"),
        [
            ({"TOKEN": 123}, r"the value of TOKEN is not a string \(int\)"),
            ({"": "x"}, "is not a non-empty string"),
            ("A=B", "env_vars must map names to values, got a str"),
            ([{"value": "x"}], "each entry of the list form must be"),
        ],
    )
    def test_bad_env_vars_are_named_without_their_values(self, env_vars, message):
        with pytest.raises(PrimeConfigError, match=message) as caught:
            PodRequest.from_offer(make_offer(), name="n", env_vars=env_vars)
        assert "123" not in str(caught.value)

    def test_secrets_stay_out_of_the_repr(self):
        request = PodRequest.from_offer(
            make_offer(), name="n", env_vars={"HF_TOKEN": "hf_secret"}, jupyter_password="jupyter-secret"
        )
        assert "hf_secret" not in repr(request)
        assert "jupyter-secret" not in repr(request)
        assert request.to_body()["pod"]["envVars"] == [{"key": "HF_TOKEN", "value": "hf_secret"}]

    def test_a_misspelt_field_is_refused(self):
        with pytest.raises(ValidationError, match="disk"):
            PodRequest(name="n", cloud_id="c", gpu_type="A100", gpu_count=1, disk=100)  # type: ignore[call-arg]

    def test_from_body_reads_the_cli_body(self):
        request = PodRequest.from_body(CLI_BODY)
        assert (request.provider_type, request.env_vars, request.team_id) == (
            "<offer's provider>",
            {"K": "V"},
            None,
        )
        assert request.to_body() == CLI_BODY

    def test_from_body_ignores_extra_keys_and_reads_the_team(self):
        body = {
            **CLI_BODY,
            "pod": {**CLI_BODY["pod"], "sshKeyId": "k"},
            "team": {"teamId": "t"},
            "provider": {},
        }
        request = PodRequest.from_body(body)
        assert (request.team_id, request.provider_type) == ("t", None)

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ([], 'a create body is an object with a "pod" object'),
            ({"pod": None}, 'a create body is an object with a "pod" object'),
            ({"pod": {"name": "n", "cloudId": "c", "gpuType": "A100"}}, "gpuCount: Field required"),
            (
                {"pod": {"name": "n", "cloudId": "c", "gpuType": "A100", "gpuCount": "two"}},
                "gpuCount: Input should be a valid integer",
            ),
        ],
    )
    def test_from_body_refuses_an_unusable_body(self, body, message):
        with pytest.raises(PrimeConfigError, match=message):
            PodRequest.from_body(body)

    def test_validation_errors_do_not_echo_values(self):
        with pytest.raises(PrimeConfigError) as caught:
            PodRequest.from_body(
                {
                    "pod": {
                        "name": "n",
                        "cloudId": "c",
                        "gpuType": "A",
                        "gpuCount": 1,
                        "jupyterPassword": 987654,
                    }
                }
            )
        assert "jupyterPassword" in str(caught.value)
        assert "987654" not in str(caught.value)

    @given(
        disk=st.integers(5, 100).map(lambda n: n * 10),
        env=st.dictionaries(st.text(min_size=1).filter(str.strip), st.text(), max_size=4),
        team=st.none() | st.text(min_size=1),
    )
    def test_to_body_and_from_body_round_trip(self, disk, env, team):
        request = PodRequest.from_offer(make_offer(), name="n", disk_size=disk, env_vars=env, team_id=team)
        assert PodRequest.from_body(request.to_body()) == request


class TestWhoAmI:
    def test_reads_the_data_envelope_and_the_scope_object(self):
        who = WhoAmI.model_validate(
            {
                "data": {
                    "id": "u1",
                    "email": "a@example.com",
                    "name": "Ada",
                    "slug": "ada",
                    "scope": {
                        "instances": {"read": True, "write": True},
                        "availability": {"read": True, "write": False},
                        "billing": None,
                    },
                    "extra": 1,
                }
            }
        )
        assert (who.id, who.email, who.slug, who.identity) == ("u1", "a@example.com", "ada", "Ada")
        assert who.scope_summary() == "availability: read; billing: none; instances: read, write"

    def test_a_bare_object_and_a_missing_scope_are_fine(self):
        who = WhoAmI.model_validate({"id": "u1", "email": "a@example.com"})
        assert who.scope == {}
        assert who.scope_summary() == ""
        assert who.identity == "a@example.com"

    def test_an_older_list_shaped_scope_is_understood(self):
        who = WhoAmI.model_validate(
            {"data": {"id": "u1", "scope": ["instances:read", "instances:write", "disks"]}}
        )
        assert who.scope_summary() == "disks: read; instances: read, write"
