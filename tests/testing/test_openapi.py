"""The simulator's answers validate against the published OpenAPI schema of the status endpoint.

The schema is vendored next to this file (extracted verbatim from the YAML block of
``../shared/prime-api/pods-status.openapi.md``) so the test runs from any checkout; when the shared
directory is present, a test checks the copy still matches it. OpenAPI 3.1 schemas are JSON
Schema 2020-12, so ``jsonschema`` validates them directly, ``$ref``s resolved by ``referencing``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from airflow_provider_prime.models import InstallationState, PodState
from airflow_provider_prime.testing import (
    BUILTIN_SCENARIOS,
    Fault,
    ManualClock,
    PrimeSimulator,
    builtin_scenario,
)
from tests.testing.http import Factory, get_status

VENDORED = Path(__file__).with_name("pods-status.openapi.yaml")
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "prime-api" / "pods-status.openapi.md"
DOCUMENT_URI = "urn:prime:pods-status-openapi"
#: Pods of the built-in scenarios that report enum values outside the schema on purpose.
DELIBERATELY_UNKNOWN = {"pod-zoo-unknown-state"}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(VENDORED.read_text(encoding="utf-8"))
    return document


def validator(openapi: dict[str, Any], schema_name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(openapi))
    return Draft202012Validator(
        {"$ref": f"{DOCUMENT_URI}#/components/schemas/{schema_name}"}, registry=registry
    )


@pytest.fixture(scope="module")
def page_schema(openapi: dict[str, Any]) -> Draft202012Validator:
    return validator(openapi, "GenericResponse_List_APIPodStatusResponse__")


def test_the_vendored_schema_matches_the_shared_contract() -> None:
    if not SHARED.exists():
        pytest.skip("../shared/prime-api is not next to this checkout")
    block = re.search(r"````yaml[^\n]*\n(.*?)````", SHARED.read_text(encoding="utf-8"), re.S)
    assert block is not None
    vendored = "".join(line for line in VENDORED.read_text().splitlines(True) if not line.startswith("#"))
    assert yaml.safe_load(vendored) == yaml.safe_load(block.group(1))


def test_the_schema_is_the_status_operation_and_the_validator_bites(
    openapi: dict[str, Any], page_schema: Draft202012Validator
) -> None:
    operation = openapi["paths"]["/api/v1/pods/status"]["get"]
    assert operation["parameters"][0]["name"] == "pod_ids"
    assert not page_schema.is_valid({"data": [{"podId": "p", "providerType": "runpod", "status": "NAPPING"}]})
    assert not page_schema.is_valid({"data": [{"podId": "p", "status": "ACTIVE"}]})
    assert page_schema.is_valid({"data": None, "status": None})


def test_the_provider_knows_every_documented_enum_value(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert set(schemas["PodStatusEnum"]["enum"]) == {state.value for state in PodState}
    assert set(schemas["InstallationStatusEnum"]["enum"]) == {state.value for state in InstallationState}


@pytest.mark.parametrize("name", sorted(BUILTIN_SCENARIOS))
def test_every_answer_of_every_built_in_scenario_validates(
    prime_simulator_factory: Factory,
    page_schema: Draft202012Validator,
    name: str,
) -> None:
    clock = ManualClock()
    sim: PrimeSimulator = prime_simulator_factory(name, clock=clock)
    ids = [pid for pid in builtin_scenario(name).pod_ids if pid not in DELIBERATELY_UNKNOWN]
    seen: set[tuple[str, str | None]] = set()
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as client:
        for _ in range(90):  # 0 to 44.5 s of pod time: every phase of every built-in pod
            body = get_status(client, *ids).json()
            errors = [error.message for error in page_schema.iter_errors(body)]
            assert errors == [], (clock(), errors)
            seen.update((pod["status"], pod["installationStatus"]) for pod in body["data"])
            clock.advance(0.5)
    if any(len(pod.timeline) > 1 for pod in builtin_scenario(name).pods):
        assert len(seen) >= 2  # the answers did change over time


def test_deliberately_unknown_enum_values_are_the_only_schema_violations(
    prime_simulator_factory: Factory,
    openapi: dict[str, Any],
) -> None:
    sim = prime_simulator_factory("zoo")
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as client:
        (pod,) = get_status(client, *DELIBERATELY_UNKNOWN).json()["data"]
    pod_schema = validator(openapi, "APIPodStatusResponse")
    paths = {tuple(error.absolute_path) for error in pod_schema.iter_errors(pod)}
    assert paths == {("status",), ("providerType",), ("installationStatus",)}


def test_validation_errors_and_null_data_validate(
    sim: PrimeSimulator, http: httpx.Client, openapi: dict[str, Any], page_schema: Draft202012Validator
) -> None:
    error_schema = validator(openapi, "ErrorResponse")
    invalid = get_status(http, "")
    assert invalid.status_code == 422
    assert error_schema.is_valid(invalid.json())
    sim.inject(Fault.http_error(422))
    assert error_schema.is_valid(get_status(http, "x").json())
    sim.inject(Fault.null_data(), Fault.extra_fields(), Fault.wrong_shape())
    assert page_schema.is_valid(get_status(http, "x").json())
    assert page_schema.is_valid(get_status(http, "x").json())
    assert not page_schema.is_valid(get_status(http, "x").json())  # the wrong shape is really wrong
