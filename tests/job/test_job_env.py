"""The environment of every node: rank, node list, master address, torchrun's names, the user's env."""

from __future__ import annotations

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.job_env import JOB_VARIABLES, node_env, user_env
from airflow_provider_prime.job_nodes import JobNode

NODES = (
    JobNode(0, "pod-a", 0, "203.0.113.1", 2201, "root", "10.0.0.1"),
    JobNode(1, "pod-a", 1, "203.0.113.1", 2202, "root", "10.0.0.2"),
    JobNode(2, "pod-b", 0, "203.0.113.2", 22, "root", None),
)


def env(rank: int, **kwargs: object) -> dict[str, str]:
    return node_env(NODES, rank, job_id="train-abc", job_dir=".prime-jobs/train-abc", **kwargs)  # type: ignore[arg-type]


def test_every_node_gets_its_rank_and_the_shared_view():
    assert env(1) == {
        "PRIME_NODE_RANK": "1",
        "PRIME_NUM_NODES": "3",
        "PRIME_NODE_IPS": "10.0.0.1,10.0.0.2,203.0.113.2",
        "PRIME_MASTER_ADDR": "10.0.0.1",
        "PRIME_MASTER_PORT": "29500",
        "PRIME_JOB_ID": "train-abc",
        "PRIME_JOB_DIR": ".prime-jobs/train-abc",
        "PRIME_RESULT_FILE": ".prime-jobs/train-abc/result.json",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
        "NODE_RANK": "1",
        "NNODES": "3",
    }


def test_every_documented_variable_is_set_and_refused_in_the_users_env():
    assert set(env(0, gpus_per_node=8)) == set(JOB_VARIABLES)


def test_master_port_gpus_and_the_users_env_on_top():
    values = env(2, master_port=12345, gpus_per_node=8, env={"LR": 0.1, "NAME": "run a"})
    assert (values["MASTER_PORT"], values["PRIME_MASTER_PORT"], values["PRIME_GPUS_PER_NODE"]) == (
        "12345",
    ) * 2 + ("8",)
    assert (values["LR"], values["NAME"]) == ("0.1", "run a")


def test_the_master_is_the_ssh_host_when_rank_0_has_no_ip():
    nodes = (JobNode(0, "p", 0, "203.0.113.7", 22), *NODES[1:])
    assert node_env(nodes, 0, job_id="j", job_dir="d")["MASTER_ADDR"] == "203.0.113.7"


@pytest.mark.parametrize(
    ("user", "says"),
    [
        ({"MASTER_ADDR": "x"}, "MASTER_ADDR is set by the job on every node"),
        ({"PRIME_MASTER_PORT": "1"}, "pass master_port="),
        ({"PRIME_GPUS_PER_NODE": "1"}, "pass gpus_per_node="),
        ({"1BAD": "x"}, "'1BAD' is not a valid environment variable name"),
        ({"A-B": "x"}, "not a valid environment variable name"),
        ({"X": None}, "X is None"),
    ],
)
def test_a_user_env_that_would_split_the_rendezvous_or_break_the_shell_is_refused(user, says):
    with pytest.raises(PrimeConfigError) as info:
        user_env(user)
    assert says in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"master_port": 0}, "master_port must be a TCP port"),
        ({"gpus_per_node": -1}, "gpus_per_node must be 0 or more"),
    ],
)
def test_bad_parameters_are_refused(kwargs, says):
    with pytest.raises(PrimeConfigError, match=says):
        env(0, **kwargs)


def test_rank_and_nodes_are_checked():
    with pytest.raises(PrimeConfigError, match="rank 3 is not a node"):
        env(3)
    with pytest.raises(PrimeConfigError, match="at least one node"):
        node_env((), 0, job_id="j", job_dir="d")
