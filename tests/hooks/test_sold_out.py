"""A create refused as sold out is a PrimeSoldOutError: the phrases, variants, the simulator's answer."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from airflow_provider_prime.exceptions import PrimeRequestError, PrimeSoldOutError
from airflow_provider_prime.hooks._endpoints import create_request, offers_page_request
from airflow_provider_prime.hooks._errors import SOLD_OUT_PHRASES, says_sold_out, status_error
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodRequest
from airflow_provider_prime.testing import PrimeSimulator

SETTINGS = PrimeApiSettings(api_key="pk-test", base_url="https://api.example")
CREATE = create_request(
    SETTINGS, PodRequest(name="train", cloud_id="c", gpu_type="H100_80GB", gpu_count=1, socket="SXM5")
)


def refused(status: int, body: object, request=CREATE) -> Exception:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return status_error(request, status, raw, "pk-test")


@pytest.mark.parametrize(
    "body",
    [
        {"detail": "Offer h100-sxm5-8 is out of stock"},  # the simulator's answer
        {"detail": "OUT_OF_STOCK"},
        {"message": "This GPU is sold-out in US-CA-2"},
        {"errors": [{"param": "pod.cloudId", "details": "No capacity for 8x H100 right now"}]},
        {"detail": [{"loc": ["body", "pod"], "msg": "Insufficient capacity in the region"}]},
        {"detail": "The requested GPUs are not available"},
        {"detail": "Offer is no longer available"},
        {"detail": "Provider unavailable for this configuration"},
        "Sold Out",  # a text body: its excerpt is what was said
        {"detail": "OutOfStock"},  # camel-case codes
        {"detail": "SoldOut: H100_80GB"},
        {"detail": "GPUOutOfStock"},
        {"detail": "Insufficient stock for this offer"},
        {"detail": "GPU not in stock"},
        {"detail": "No stock left for H100_80GB"},
        {"detail": "Provider is out of capacity"},
        {"detail": "Offer h100-sxm5-8 is not available"},  # "not available" said of the offer
        {"detail": "GPU H100_80GB x8 is currently unavailable"},
        {"detail": "OFFER_NOT_AVAILABLE"},
        {"detail": "The GPU's offer isn't available"},
    ],
)
def test_a_refused_create_that_says_no_capacity_is_sold_out(body):
    error = refused(400, body)
    assert type(error) is PrimeSoldOutError
    assert isinstance(error, PrimeRequestError)  # callers catching the old class still do
    assert "nothing was created" in str(error)
    assert "wait_for_capacity" in str(error)
    assert error.http_status == 400


@pytest.mark.parametrize("status", [400, 409, 422])
def test_any_4xx_status_counts(status):
    assert type(refused(status, {"detail": "out of stock"})) is PrimeSoldOutError


@pytest.mark.parametrize(
    "body",
    [
        {"detail": [{"loc": ["body", "pod", "diskSize"], "msg": "must be between 20 and 1000"}]},
        {"detail": "image 'x' is not offered by sim-h100"},
        {"message": "stock market"},
        {},
        # "not available" said of something else than capacity: a create that can never succeed
        {"detail": "Image 'ghcr.io/acme/train:v9' is not available"},
        {"detail": "Image 'ghcr.io/acme/gpu-train:v9' is not available"},  # a quoted name is no subject
        {"detail": "Field 'disk_size': 5000 GB is not available for this offer"},
        {"detail": "Custom template tpl-123 is unavailable to your team"},
        {"detail": "GPU image foo is not available"},
        {"detail": "This feature is unavailable"},
        {"detail": "not available"},
    ],
)
def test_other_refusals_stay_request_errors(body):
    assert type(refused(422, body)) is PrimeRequestError


def test_only_a_create_is_sold_out():
    listing = offers_page_request(SETTINGS, 0, "H100_80GB", 1, [], False)
    assert type(refused(400, {"detail": "out of stock"}, listing)) is PrimeRequestError


def test_the_phrases_are_matched_across_case_spaces_underscores_and_dashes():
    assert all(says_sold_out([phrase.upper().replace(" ", "_")]) for phrase in SOLD_OUT_PHRASES)
    assert says_sold_out(["", "Sold -  out"])
    assert not says_sold_out(["in stock", "capacity 8"])
    assert not says_sold_out(["stockout_sold_outside"])  # whole words only


def test_unavailable_counts_only_when_said_of_capacity():
    """F1 of issue 22: a bare "not available" is no sold out (an image or a disk is unavailable too)."""
    assert says_sold_out(["The requested GPUs are not available", "ok"])
    assert says_sold_out(["Capacity unavailable in US-CA-2"])
    assert not says_sold_out(["Volume vol-1 is not available", "Unavailable"])


def test_the_simulators_sold_out_offer_is_refused_as_sold_out_and_nothing_is_created(
    prime_simulator: PrimeSimulator, prime_connect: Callable[..., str]
) -> None:
    prime_connect(prime_simulator)
    hook = PrimeHook()
    offer = next(
        o for o in hook.list_gpu_offers(gpu_type="B200_180GB") if o.cloud_id == "sim-b200-8x-sold-out"
    )
    with pytest.raises(PrimeSoldOutError, match="Offer sim-b200-8x-sold-out is out of stock"):
        hook.create_pod(PodRequest.from_offer(offer, name="train-b200"))
    assert prime_simulator.billing()["created"] == {}
