"""The job's nodes in rank order, read from the pods' handover; unusable pods refused by name."""

from __future__ import annotations

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.job_nodes import JobNode, handover_of, job_nodes
from airflow_provider_prime.readiness import handover_entry
from tests.statuses import pod


def entry(*ssh: str | None, ips: list[str | None] | None = None, **fields: object) -> dict[str, object]:
    status = pod(ssh=list(ssh), ip=ips if ips is not None else [f"10.0.0.{i + 1}" for i in range(len(ssh))])
    return {**handover_entry(status), **fields}


def test_rank_order_is_pods_then_their_nodes():
    pods = {
        "pod-a": entry("root@203.0.113.1 -p 2201", "root@203.0.113.1 -p 2202"),
        "pod-b": entry("ubuntu@203.0.113.2"),
    }
    nodes = job_nodes(pods)
    assert [(n.rank, n.pod_id, n.index, n.host, n.port, n.user, n.ip) for n in nodes] == [
        (0, "pod-a", 0, "203.0.113.1", 2201, "root", "10.0.0.1"),
        (1, "pod-a", 1, "203.0.113.1", 2202, "root", "10.0.0.2"),
        (2, "pod-b", 0, "203.0.113.2", 22, "ubuntu", "10.0.0.1"),
    ]
    assert nodes[1].label == "node 1 (pod-a node 2, root@203.0.113.1:2202)"


def test_a_mapped_create_gives_a_list_of_handovers_in_map_order():
    pods = [{"pod-x": entry("root@h1 -p 22")}, {"pod-y": entry("root@h2 -p 22", "root@h3 -p 22")}]
    assert [(n.rank, n.pod_id, n.host) for n in job_nodes(pods)] == [
        (0, "pod-x", "h1"),
        (1, "pod-y", "h2"),
        (2, "pod-y", "h3"),
    ]


def test_the_address_is_the_private_ip_else_the_ssh_host():
    nodes = job_nodes(
        {"p": entry("root@203.0.113.9 -p 22", "root@203.0.113.9 -p 23", ips=["10.1.0.5", None])}
    )
    assert [n.address for n in nodes] == ["10.1.0.5", "203.0.113.9"]


def test_extra_keys_such_as_the_price_are_ignored_and_a_handover_without_nodes_is_parsed():
    raw = {
        "status": "ACTIVE",
        "installation_status": "FINISHED",
        "ssh_connections": ["root@h -p 2"],
        "price_hr": 1.5,
    }
    (node,) = job_nodes({"p": raw})
    assert (node.host, node.port, node.ip) == ("h", 2, None)


def test_nodes_round_trip_through_plain_values():
    nodes = job_nodes({"p": entry("root@h -p 2222")})
    assert tuple(JobNode.from_dict(n.to_dict()) for n in nodes) == nodes


@pytest.mark.parametrize(
    ("pods", "says"),
    [
        (
            {"pod-1": entry("root@h", status="PROVISIONING")},
            "Pod pod-1 is not ready to run a job: it is PROVISIONING",
        ),
        ({"pod-1": entry("root@h", installation_status="PENDING")}, "installation is PENDING, not FINISHED"),
        ({"pod-1": entry("root@h", None)}, "Pod pod-1 node 2 has no SSH target (the platform said None)"),
        ({}, "The job has no pods to run on"),
        ([], "The job has no pods to run on"),
        ([{"pod-1": entry("root@h")}, {"pod-1": entry("root@h")}], "Pod pod-1 is given twice"),
        ("{'pod-1': {}}", "pods= got a string"),
        (["pod-1"], "pods= holds str"),
        ({"pod-1": "ready"}, "Pod pod-1: its handover entry is str"),
        (
            {"pod-1": {"status": "ACTIVE", "installation_status": "FINISHED", "nodes": "x"}},
            "'nodes' in its handover",
        ),
        (42, "not int"),
    ],
)
def test_unusable_pods_are_refused_naming_the_pod_the_node_and_why(pods, says):
    with pytest.raises(PrimeConfigError) as info:
        job_nodes(pods)
    assert says in str(info.value)


def test_installation_may_be_waived():
    (node,) = job_nodes({"p": entry("root@h", installation_status="PENDING")}, require_installation=False)
    assert node.host == "h"


def test_pods_read_by_id_keep_the_order_asked_and_a_missing_one_is_named():
    statuses = {"b": pod("b", ssh="root@hb"), "a": pod("a", ssh="root@ha")}
    assert [n.pod_id for n in job_nodes(handover_of(["a", "b"], statuses))] == ["a", "b"]
    with pytest.raises(PrimeConfigError, match="Pod c is not in the Prime API's answer"):
        handover_of(["a", "c"], statuses)
