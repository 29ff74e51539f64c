"""Choosing an offer: every filter, the ranking, its ties, and what the "no offer" error says."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_prime.exceptions import PrimeConfigError, PrimeNoOfferError
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.offers import (
    NEAREST_LIMIT,
    AvailabilityQuery,
    OfferWish,
    choose_offer,
    describe_offer,
    names_in_order,
    nearest_offers,
)
from tests.payloads import make_offer


def priced(
    cloud_id: str, community: float | None, on_demand: float | None = None, **changes: Any
) -> GpuOffer:
    return make_offer(
        cloudId=cloud_id, prices={"communityPrice": community, "onDemand": on_demand}, **changes
    )


H100 = OfferWish(gpu_type="H100_80GB", gpu_count=8)


def chosen(offers: list[GpuOffer], wish: OfferWish = H100) -> str:
    return choose_offer(offers, wish).offer.cloud_id


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
        first = choose_offer(offers, H100).offer.data_center
        assert choose_offer(list(reversed(offers)), H100).offer.data_center == first

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
        best = choose_offer(offers, H100).offer
        assert choose_offer(shuffled, H100).offer == best
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
            "H100_80GB x16 in US or else CA, cloud_id c, socket SXM5, security secure_cloud, "
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


# -- ordered fallbacks, spot, the reason, the request -------------------------------------------

FALLBACK = OfferWish(gpu_type=["H100_80GB", "A100_80GB"], gpu_count=8)  # type: ignore[arg-type]


class TestPreferenceOrder:
    def test_the_earliest_gpu_type_wins_over_a_cheaper_later_one(self):
        offers = [priced("a100", 1.0, gpuType="A100_80GB"), priced("h100", 20.0)]
        choice = choose_offer(offers, FALLBACK)
        assert choice.offer.cloud_id == "h100"
        assert "GPU type H100_80GB is choice 1 of 2" in choice.why

    def test_a_later_gpu_type_is_taken_when_no_earlier_one_fits(self):
        offers = [
            priced("h100-gone", 1.0, stockStatus="Unavailable"),
            priced("a100", 9.0, gpuType="A100_80GB"),
            priced("b200", 0.5, gpuType="B200"),
        ]
        choice = choose_offer(offers, FALLBACK)
        assert choice.offer.cloud_id == "a100"
        assert "GPU type A100_80GB is choice 2 of 2 (no offer of H100_80GB fits)" in choice.why

    def test_the_earliest_region_wins_over_a_cheaper_later_one_within_a_gpu_type(self):
        offers = [
            priced("ca", 1.0, region="canada", country="CA", dataCenter="CA-1"),
            priced("us", 5.0),
            priced("a100-eu", 0.1, gpuType="A100_80GB", region="eu", country="DE", dataCenter="DE-1"),
        ]
        wish = OfferWish(gpu_type=("H100_80GB", "A100_80GB"), regions=("US", "CA", "DE"))
        choice = choose_offer(offers, wish)
        assert choice.offer.cloud_id == "us"
        assert "region US is choice 1 of 3" in choice.why
        without_us = choose_offer(offers[::2], wish)
        assert without_us.offer.cloud_id == "ca"  # a later region of the first type before a later type
        assert "region CA is choice 2 of 3 (no offer in US fits)" in without_us.why

    def test_price_decides_among_offers_equal_by_type_region_and_spot(self):
        choice = choose_offer([priced("dear", 9.0), priced("cheap", 3.0)], FALLBACK)
        assert choice.offer.cloud_id == "cheap"
        assert "the cheapest ($3.00/h) of 2 offers equal by type, region and spot" in choice.why
        assert choice.why.endswith("2 of the offers fit")

    def test_the_summary_for_the_xcom(self):
        choice = choose_offer([priced("one", 3.0)], H100)
        assert choice.summary() == {
            "cloud_id": "one",
            "gpu_type": "H100_80GB",
            "gpu_count": 8,
            "provider": choice.offer.provider,
            "region": "united_states",
            "country": "US",
            "data_center": "US-CA-2",
            "price_hr": 3.0,
            "is_spot": False,
            "stock_status": "Available",
            "why": "the only such offer ($3.00/h); 1 of the offers fit",
        }


class TestSpot:
    OFFERS = (priced("spot", 1.0, isSpot=True), priced("on-demand", 4.0))

    def test_never_is_the_default_and_refuses_spot(self):
        assert OfferWish(gpu_type="H100_80GB").spot == "never"
        assert chosen(list(self.OFFERS)) == "on-demand"
        with pytest.raises(PrimeNoOfferError, match=r"a spot offer \(spot='never'\)"):
            choose_offer(self.OFFERS[:1], H100)

    def test_prefer_takes_spot_first_even_when_dearer_and_on_demand_without_it(self):
        wish = OfferWish(gpu_type="H100_80GB", spot="prefer")
        dear_spot = [priced("spot", 9.0, isSpot=True), priced("on-demand", 4.0)]
        choice = choose_offer(dear_spot, wish)
        assert (choice.offer.cloud_id, "spot, as preferred" in choice.why) == ("spot", True)
        fallback = choose_offer(dear_spot[1:], wish)
        assert "on-demand (no spot offer fits)" in fallback.why

    def test_prefer_ranks_after_gpu_type_and_region(self):
        wish = OfferWish(gpu_type=("H100_80GB", "A100_80GB"), spot="prefer")
        offers = [priced("a100-spot", 1.0, gpuType="A100_80GB", isSpot=True), priced("h100", 4.0)]
        choice = choose_offer(offers, wish)
        assert choice.offer.cloud_id == "h100"
        # A spot offer does fit (of the later type): the reason must not say none does (issue 22 F4).
        assert "no spot offer fits" not in choice.why
        assert "no spot offer of this GPU type and region fits" in choice.why

    def test_prefer_says_the_truth_about_spot_of_a_later_region(self):
        wish = OfferWish(gpu_type="H100_80GB", regions=("US", "CA"), spot="prefer")
        offers = [priced("ca-spot", 1.0, country="CA", isSpot=True), priced("us", 4.0, country="US")]
        choice = choose_offer(offers, wish)
        assert choice.offer.cloud_id == "us"
        assert "on-demand (no spot offer of this GPU type and region fits" in choice.why

    def test_only_refuses_on_demand(self):
        wish = OfferWish(gpu_type="H100_80GB", spot="only")
        assert choose_offer(self.OFFERS, wish).offer.cloud_id == "spot"
        with pytest.raises(PrimeNoOfferError, match=r"not a spot offer \(spot='only'\)"):
            choose_offer(self.OFFERS[1:], wish)

    def test_an_unknown_preference_is_refused(self):
        with pytest.raises(PrimeConfigError, match="spot must be one of never, prefer, only"):
            OfferWish(gpu_type="H100_80GB", spot="sometimes")  # type: ignore[arg-type]


class TestNamesInOrder:
    @pytest.mark.parametrize(
        "given",
        [
            ["H100_80GB", "A100_80GB"],
            ("H100_80GB", "A100_80GB"),
            '["H100_80GB", "A100_80GB"]',  # JSON from params | tojson
            "['H100_80GB', 'A100_80GB']",  # what Jinja renders for a Python list
            " [ 'H100_80GB' , 'A100_80GB', 'H100_80GB' ] ",  # a repeat counts once
        ],
    )
    def test_a_list_or_its_text_is_the_list(self, given):
        assert names_in_order(given, "gpu_type") == ("H100_80GB", "A100_80GB")
        assert OfferWish(gpu_type=given).gpu_types == ("H100_80GB", "A100_80GB")

    def test_one_name_stays_a_name(self):
        assert OfferWish(gpu_type=["H100_80GB"]).gpu_type == "H100_80GB"  # type: ignore[arg-type]
        assert OfferWish(gpu_type="H100_80GB").gpu_types == ("H100_80GB",)

    @pytest.mark.parametrize("text", ["[H100_80GB, A100]", "[1, 2]", '["ok", ""]', "[{}]"])
    def test_text_that_looks_like_a_list_but_is_not_one_of_names_is_refused(self, text):
        with pytest.raises(PrimeConfigError, match="gpu_type"):
            names_in_order(text, "gpu_type")

    def test_regions_text_is_read_as_the_list_too(self):
        assert names_in_order('["US", "CA"]', "regions") == ("US", "CA")


class TestRequestAndRoundTrip:
    def test_one_type_is_the_api_filter_several_are_one_unfiltered_request(self):
        one = OfferWish(gpu_type="H100_80GB", gpu_count=8, regions=("US",), multi_node=True)
        assert one.availability_query() == AvailabilityQuery("H100_80GB", 8, ("US",), True)
        assert FALLBACK.availability_query() == AvailabilityQuery(None, 8, (), False)
        assert OfferWish(cloud_id="c").availability_query() == AvailabilityQuery()

    def test_a_wish_survives_plain_data(self):
        wish = OfferWish(
            gpu_type=("H100_80GB", "A100_80GB"),
            gpu_count=8,
            regions=("US", "CA"),
            max_price=12.5,
            spot="prefer",
            socket="SXM5",
        )
        data = json.loads(json.dumps(wish.to_dict()))
        assert OfferWish.from_dict(data) == wish
        assert OfferWish.from_dict({**data, "future_field": 1}) == wish

    def test_several_types_in_the_no_offer_message_and_the_nearest_lines(self):
        offers = [priced("b200", 1.0, gpuType="B200"), priced("h100-gone", 2.0, stockStatus="Unavailable")]
        with pytest.raises(PrimeNoOfferError) as caught:
            choose_offer(offers, FALLBACK)
        text = str(caught.value)
        assert "No GPU offer matches H100_80GB or else A100_80GB x8" in text
        assert text.index("h100-gone") < text.index("b200")  # the wished type is nearer
        assert "GPU type is not H100_80GB or A100_80GB" in text
        lines = nearest_offers(offers, FALLBACK)
        assert lines[0].startswith("H100_80GB x8 in US (US-CA-2), $2.00/h")
        assert "stock Unavailable: out of stock (Unavailable)" in lines[0]
        assert nearest_offers(offers[1:], OfferWish(gpu_type="H100_80GB"))[0].endswith(
            "out of stock (Unavailable)"
        )
