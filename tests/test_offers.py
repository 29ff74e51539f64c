"""Choosing an offer: every filter, the ranking, its ties, and what the "no offer" error says."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_prime.exceptions import PrimeConfigError, PrimeNoOfferError
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.offers import NEAREST_LIMIT, OfferWish, choose_offer, describe_offer
from tests.payloads import make_offer


def priced(
    cloud_id: str, community: float | None, on_demand: float | None = None, **changes: Any
) -> GpuOffer:
    return make_offer(
        cloudId=cloud_id, prices={"communityPrice": community, "onDemand": on_demand}, **changes
    )


H100 = OfferWish(gpu_type="H100_80GB", gpu_count=8)


def chosen(offers: list[GpuOffer], wish: OfferWish = H100) -> str:
    return choose_offer(offers, wish).cloud_id


class TestFilters:
    def test_by_cloud_id_alone(self):
        offers = [priced("cheap", 1.0), priced("wanted", 30.0)]
        assert chosen(offers, OfferWish(cloud_id="wanted")) == "wanted"

    def test_by_gpu_type_case_insensitively_and_count(self):
        offers = [
            priced("a100", 1.0, gpuType="A100_80GB"),
            priced("h100x1", 2.0, gpuCount=1),
            priced("h100x8", 20.0),
        ]
        assert chosen(offers, OfferWish(gpu_type="h100_80gb", gpu_count=8)) == "h100x8"
        assert chosen(offers, OfferWish(gpu_type="H100_80GB")) == "h100x1"

    @pytest.mark.parametrize("region", ["united_states", "us", "us-ca-2"])
    def test_region_matches_region_country_or_data_center(self, region):
        offers = [priced("eu", 1.0, region="eu_west", country="DE", dataCenter="EU-FR-1"), priced("us", 5.0)]
        assert chosen(offers, OfferWish(gpu_type="H100_80GB", regions=(region,))) == "us"

    def test_any_of_several_regions_and_a_bare_string_is_one_region(self):
        offers = [priced("ca", 1.0, region="canada", country="CA", dataCenter="CA-1"), priced("us", 5.0)]
        assert chosen(offers, OfferWish(gpu_type="H100_80GB", regions=("eu_west", "canada"))) == "ca"
        wish = OfferWish(gpu_type="H100_80GB", regions="US")  # type: ignore[arg-type]
        assert wish.regions == ("US",)
        assert chosen(offers, wish) == "us"

    def test_socket_and_security(self):
        offers = [
            priced("pcie", 1.0, socket="PCIe"),
            priced("community", 2.0, security="community_cloud"),
            priced("sxm-secure", 9.0),
        ]
        assert (
            chosen(offers, OfferWish(gpu_type="H100_80GB", socket="sxm5", security="SECURE_CLOUD"))
            == "sxm-secure"
        )

    def test_max_price_applies_to_the_ranking_price(self):
        # Community 14 is under the cap although on-demand 21 is not: the billed price counts.
        offers = [priced("community", 14.0, 21.0), priced("on-demand", None, 16.0)]
        assert chosen(offers, OfferWish(gpu_type="H100_80GB", max_price=15)) == "community"
        assert chosen(offers, OfferWish(gpu_type="H100_80GB", max_price=14)) == "community"
        with pytest.raises(PrimeNoOfferError):
            choose_offer(offers, OfferWish(gpu_type="H100_80GB", max_price=13.99))

    def test_an_offer_without_a_price_passes_no_price_cap(self):
        with pytest.raises(PrimeNoOfferError, match="no price to compare with max_price 100"):
            choose_offer([priced("free?", None, None)], OfferWish(gpu_type="H100_80GB", max_price=100))

    @pytest.mark.parametrize("stock", ["Unavailable", "out_of_stock", "Out of Stock", "SOLD-OUT"])
    def test_out_of_stock_offers_are_never_chosen(self, stock):
        offers = [priced("gone", 1.0, stockStatus=stock), priced("here", 9.0, stockStatus="Low")]
        assert chosen(offers) == "here"

    def test_unknown_or_missing_stock_is_not_a_reason_to_refuse(self):
        assert chosen([priced("new", 1.0, stockStatus="Plenty"), priced("x", 2.0, stockStatus=None)]) == "new"


class TestRanking:
    def test_cheapest_community_price_wins(self):
        assert chosen([priced("b", 19.0, 10.0), priced("a", 18.0, 30.0)]) == "a"

    def test_an_offer_without_community_price_ranks_by_on_demand(self):
        assert (
            chosen([priced("community", 12.0, 30.0), priced("on-demand-only", None, 11.0)])
            == "on-demand-only"
        )

    def test_equal_community_prices_are_decided_by_on_demand(self):
        assert chosen([priced("b", 12.0, 30.0), priced("a", 12.0, 20.0)]) == "a"

    def test_full_ties_are_broken_by_cloud_id_whatever_the_order(self):
        offers = [priced("zeta", 12.0, 20.0), priced("alpha", 12.0, 20.0), priced("mid", 12.0, 20.0)]
        assert chosen(offers) == chosen(list(reversed(offers))) == "alpha"

    def test_one_cloud_id_in_two_data_centers_is_chosen_the_same_way_in_any_order(self):
        offers = [priced("same", 12.0, dataCenter="US-TX-1"), priced("same", 12.0, dataCenter="US-CA-2")]
        first = choose_offer(offers, H100).data_center
        assert choose_offer(list(reversed(offers)), H100).data_center == first

    def test_unpriced_offers_come_last(self):
        assert chosen([priced("unpriced", None, None), priced("priced", 99.0)]) == "priced"

    @given(
        st.lists(
            st.tuples(st.sampled_from("abcdef"), st.none() | st.floats(0, 50), st.none() | st.floats(0, 50)),
            min_size=1,
            max_size=8,
        ),
        st.randoms(),
    )
    def test_the_choice_does_not_depend_on_the_order(self, specs, rng):
        offers = [priced(cloud_id, community, on_demand) for cloud_id, community, on_demand in specs]
        shuffled = list(offers)
        rng.shuffle(shuffled)
        best = choose_offer(offers, H100)
        assert choose_offer(shuffled, H100) == best
        inf = float("inf")
        price = best.prices.price
        assert all(
            (inf if o.prices.price is None else o.prices.price) >= (inf if price is None else price)
            for o in offers
        )


class TestNoOffer:
    def test_the_message_says_what_was_asked_how_many_were_seen_and_why_the_nearest_failed(self):
        offers = [
            priced("h100-8", 19.92, 21.0),
            priced("h100-1", 2.49, gpuCount=1),
            priced("a100-8", 9.0, gpuType="A100_80GB"),
        ]
        wish = OfferWish(gpu_type="H100_80GB", gpu_count=8, regions=("US",), max_price=15)
        with pytest.raises(PrimeNoOfferError) as caught:
            choose_offer(offers, wish)
        lines = str(caught.value).splitlines()
        assert (
            lines[0] == "No GPU offer matches H100_80GB x8 in US, at most $15/h; looked at 3 offers. Nearest:"
        )
        assert lines[1:] == [
            "  - H100_80GB x1 in US (US-CA-2), $2.49/h, runpod cloud_id=h100-1: 1 GPU, not 8",
            "  - H100_80GB x8 in US (US-CA-2), $19.92/h, runpod cloud_id=h100-8: price above max_price 15",
            "  - A100_80GB x8 in US (US-CA-2), $9.00/h, runpod cloud_id=a100-8: GPU type is not H100_80GB",
        ]

    def test_every_unmet_constraint_is_listed(self):
        offer = priced(
            "x", 3.0, gpuCount=2, socket="PCIe", security="community_cloud", stockStatus="Unavailable"
        )
        wish = OfferWish(
            gpu_type="H100_80GB", gpu_count=8, regions=("eu_west",), socket="SXM5", security="secure_cloud"
        )
        with pytest.raises(PrimeNoOfferError) as caught:
            choose_offer([offer], wish)
        assert (
            str(caught.value)
            .splitlines()[1]
            .endswith(
                ": 2 GPUs, not 8; not in eu_west; socket PCIe, not SXM5; "
                "security community_cloud, not secure_cloud; out of stock (Unavailable)"
            )
        )

    def test_only_the_nearest_few_are_listed(self):
        offers = [priced(f"o{n:02}", float(n), gpuCount=1) for n in range(12)]
        with pytest.raises(PrimeNoOfferError) as caught:
            choose_offer(offers, H100)
        listed = str(caught.value).splitlines()[1:]
        assert len(listed) == NEAREST_LIMIT
        assert "looked at 12 offers" in str(caught.value)
        assert "cloud_id=o00" in listed[0]

    def test_a_wrong_cloud_id_ranks_behind_the_right_one(self):
        offers = [priced("other", 1.0), priced("wanted", 50.0)]
        with pytest.raises(PrimeNoOfferError) as caught:
            choose_offer(offers, OfferWish(cloud_id="wanted", max_price=10))
        listed = str(caught.value).splitlines()[1:]
        assert "cloud_id=wanted: price above max_price 10" in listed[0]
        assert listed[1].endswith("cloud_id is not wanted")

    def test_an_empty_availability_list_is_said_so(self):
        with pytest.raises(
            PrimeNoOfferError, match=r"looked at 0 offers \(the availability list was empty\)"
        ):
            choose_offer([], OfferWish(gpu_type="B200", multi_node=True))

    def test_the_wish_is_described_in_full(self):
        wish = OfferWish(
            gpu_type="H100_80GB",
            gpu_count=16,
            cloud_id="c",
            regions=("US", "CA"),
            socket="SXM5",
            security="secure_cloud",
            max_price=40.5,
            multi_node=True,
        )
        assert wish.describe() == (
            "H100_80GB x16 in US or CA, cloud_id c, socket SXM5, security secure_cloud, "
            "at most $40.5/h, multi-node"
        )


class TestWishValidation:
    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({}, "needs a gpu_type or a cloud_id"),
            ({"gpu_type": "H100_80GB", "gpu_count": 0}, "gpu_count must be a positive whole number, got 0"),
            ({"gpu_type": "H100_80GB", "gpu_count": True}, "gpu_count must be a positive whole number"),
            (
                {"gpu_type": "H100_80GB", "gpu_count": "8"},
                "gpu_count must be a positive whole number, got '8'",
            ),
            (
                {"gpu_type": "H100_80GB", "max_price": -1},
                "max_price must be a positive price per hour, got -1",
            ),
            ({"gpu_type": "H100_80GB", "max_price": "cheap"}, "max_price must be a positive price"),
            ({"gpu_type": "H100_80GB", "regions": ("US", " ")}, "regions must be region names"),
            ({"gpu_type": "H100_80GB", "regions": 5}, "regions must be region names, got 5"),
        ],
    )
    def test_a_bad_wish_is_refused(self, arguments, message):
        with pytest.raises(PrimeConfigError, match=message):
            OfferWish(**arguments)

    def test_a_region_list_becomes_a_tuple(self):
        assert OfferWish(gpu_type="A100", regions=["US", " EU "]).regions == ("US", "EU")  # type: ignore[arg-type]


class TestDescribeOffer:
    def test_full(self):
        assert (
            describe_offer(priced("h100-8", 19.92))
            == "H100_80GB x8 in US (US-CA-2), $19.92/h, runpod cloud_id=h100-8"
        )

    def test_sparse_and_spot(self):
        offer = priced(
            "x", None, None, country=None, region=None, dataCenter=None, provider=None, isSpot=True
        )
        assert describe_offer(offer) == "H100_80GB x8, no price spot, unknown provider cloud_id=x"
        only_dc = priced("y", 1.5, country=None, region=None, isSpot=True)
        assert describe_offer(only_dc) == "H100_80GB x8 in US-CA-2, $1.50/h spot, runpod cloud_id=y"
