"""Pydantic models of the Prime Intellect API payloads: pod statuses, pods, offers, the create request.

The API grows: new statuses, new provider types and new fields appear without notice, and a wait
must never fail over a field it does not need. So every model here is tolerant in the same way:

* enum-like fields (status, provider type, socket, security, stock...) are plain strings; the
  known values are listed in the ``*State`` classes for comparison and documentation only;
* unknown fields are ignored, ``null`` lists are empty lists, ports given as numbers become text;
* attributes are snake_case, the camelCase wire names are aliases, and either spelling is accepted
  on input (``populate_by_name``), so the simulator and tests can build models by attribute name;
* models are frozen: a payload is a fact that was observed, not something to edit.

The one exception is :class:`PodRequest`, which is *ours*: it is checked strictly against the
offer it was built from (disk, vCPUs, memory, image) so a bad argument fails before any GPU is
rented, with a :class:`~airflow_provider_prime.exceptions.PrimeConfigError` that names the field,
the value and what is allowed. Secrets it carries (environment values, the Jupyter password) are
left out of its ``repr`` and out of every error message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_provider_prime.exceptions import PrimeConfigError

T = TypeVar("T")


#: Shortest request value that is scrubbed from messages (Airflow's own masker's default).
MIN_SECRET_LENGTH = 5


class PodState(str, Enum):
    """Pod statuses documented by the API (``PodStatusEnum``); others may appear and are kept as text."""

    PROVISIONING = "PROVISIONING"
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    STOPPED = "STOPPED"
    ERROR = "ERROR"
    DELETING = "DELETING"
    UNKNOWN = "UNKNOWN"
    TERMINATED = "TERMINATED"


class InstallationState(str, Enum):
    """Installation statuses documented by the API (``InstallationStatusEnum``)."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    ERROR = "ERROR"
    TERMINATED = "TERMINATED"


#: Pod statuses of a pod that is gone or going: deleting it again is done, adopting it is not.
GONE_STATES = frozenset({PodState.TERMINATED.value, PodState.DELETING.value})
#: Pod statuses of a pod that is still there but broken: it will not become ready by itself.
BROKEN_STATES = frozenset({PodState.ERROR.value, PodState.STOPPED.value})
#: Pod statuses that no amount of waiting turns into ACTIVE: gone, going or broken.
FAILED_POD_STATES = GONE_STATES | BROKEN_STATES
#: Installation statuses that mean the image will never finish installing.
FAILED_INSTALLATION_STATES = frozenset({InstallationState.ERROR.value, InstallationState.TERMINATED.value})


# --- field types shared by the models -------------------------------------------------------------


def _plain_text(value: Any) -> Any:
    # An Enum member (e.g. from a test) is stored as its value so comparisons stay textual.
    return value.value if isinstance(value, Enum) else value


def _progress_number(value: Any) -> Any:
    # Progress is informational: a float is rounded, anything non-numeric is dropped
    # rather than failing a wait over a cosmetic field.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return round(value)


def _port_text(value: Any) -> Any:
    # Ports are strings on the wire; older answers (and hand-written scenarios) use numbers.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _iso_text(value: Any) -> Any:
    # Timestamps are kept as the API's ISO text; a datetime (from a scenario) is written the same way.
    return value.isoformat() if isinstance(value, datetime) else value


def _none_as_empty(value: Any) -> Any:
    return [] if value is None else value


#: A string field whose values come from an open enum (an Enum member is stored as its value).
EnumText = Annotated[str, BeforeValidator(_plain_text)]
#: ``installationProgress``: 0-100, rounded; unusable values become ``None``.
Progress = Annotated[int | None, BeforeValidator(_progress_number)]
#: A port number, as text.
PortText = Annotated[str, BeforeValidator(_port_text)]
#: An ISO 8601 timestamp, as text.
Timestamp = Annotated[str | None, BeforeValidator(_iso_text)]
#: A list the API may send as ``null``.
ListOrNull = Annotated[list[T], BeforeValidator(_none_as_empty)]


class _Tolerant(BaseModel):
    """The base of every model of an API answer: both spellings in, unknown fields out, frozen."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


def _as_node_list(value: str | list[str | None] | None) -> list[str | None]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class _PerNode(_Tolerant):
    """The per-node connection fields that a pod status and a pod share.

    ``sshConnection`` and ``ip`` are one string, a list with one entry per node (``None`` for a
    node that is not ready yet), or null; the properties always give the per-node list.
    """

    ssh_connection: str | list[str | None] | None = Field(default=None, alias="sshConnection")
    ip: str | list[str | None] | None = None

    @property
    def ssh_connections(self) -> list[str | None]:
        """One SSH target per node; ``None`` marks a node whose SSH is not ready (never dropped)."""
        return _as_node_list(self.ssh_connection)

    @property
    def ips(self) -> list[str | None]:
        """One IP per node; ``None`` marks a node without an address yet (never dropped)."""
        return _as_node_list(self.ip)


# --- pod statuses (GET /pods/status) ---------------------------------------------------------------


class PodStatus(_PerNode):
    """The status of one pod, as ``GET /api/v1/pods/status`` reports it (snake_case attributes)."""

    pod_id: str = Field(alias="podId")
    provider_type: EnumText = Field(alias="providerType")
    status: EnumText
    installation_status: EnumText | None = Field(default=None, alias="installationStatus")
    installation_failure: str | None = Field(default=None, alias="installationFailure")
    installation_progress: Progress = Field(default=None, alias="installationProgress")


class PodStatusPage(_Tolerant):
    """The response envelope ``GenericResponse[List[APIPodStatusResponse]]``."""

    data: list[PodStatus] | None = None
    status: str | None = None

    @property
    def pods(self) -> list[PodStatus]:
        """The pods in the page; ``data: null`` means none."""
        return list(self.data or [])


# --- pods (GET /pods/, GET /pods/{id}, POST /pods/) ----------------------------------------------


class PortMapping(_Tolerant):
    """One entry of ``primePortMapping``: which external port reaches which port inside the pod."""

    internal: PortText
    external: PortText
    protocol: str
    description: str | None = None
    used_by: str | None = Field(default=None, alias="usedBy")


class Pod(_PerNode):
    """A pod as ``GET /pods/{id}``, the pods list and the create answer describe it.

    Only ``id``, ``status`` and ``providerType`` are demanded: the other keys the API calls
    required are kept too, but a pod missing one is still a pod (and still has to be deleted).
    """

    id: str
    name: str | None = None
    gpu_name: str | None = Field(default=None, alias="gpuName")
    gpu_count: int | None = Field(default=None, alias="gpuCount")
    status: EnumText
    provider_type: EnumText = Field(alias="providerType")
    created_at: Timestamp = Field(default=None, alias="createdAt")
    resources: dict[str, Any] | None = None
    socket: EnumText | None = None
    type: EnumText | None = None
    installation_status: EnumText | None = Field(default=None, alias="installationStatus")
    installation_failure: str | None = Field(default=None, alias="installationFailure")
    installation_progress: Progress = Field(default=None, alias="installationProgress")
    price_hr: float | None = Field(default=None, alias="priceHr")
    team_id: str | None = Field(default=None, alias="teamId")
    user_id: str | None = Field(default=None, alias="userId")
    wallet_id: str | None = Field(default=None, alias="walletId")
    updated_at: Timestamp = Field(default=None, alias="updatedAt")
    terminated_at: Timestamp = Field(default=None, alias="terminatedAt")
    environment_type: str | None = Field(default=None, alias="environmentType")
    attached_resources: ListOrNull[dict[str, Any]] = Field(default_factory=list, alias="attachedResources")
    prime_port_mapping: ListOrNull[PortMapping] = Field(default_factory=list, alias="primePortMapping")
    jupyter_password: str | None = Field(default=None, alias="jupyterPassword", repr=False)
    stopped_price_hr: float | None = Field(default=None, alias="stoppedPriceHr")
    provisioning_price_hr: float | None = Field(default=None, alias="provisioningPriceHr")
    base_price_hr: float | None = Field(default=None, alias="basePriceHr")
    base_currency: str | None = Field(default=None, alias="baseCurrency")
    custom_template_id: str | None = Field(default=None, alias="customTemplateId")
    is_spot: bool | None = Field(default=None, alias="isSpot")
    auto_restart: bool | None = Field(default=None, alias="autoRestart")

    def to_status(self) -> PodStatus:
        """This pod as a :class:`PodStatus`, so the one readiness code can judge it."""
        return PodStatus(
            pod_id=self.id,
            provider_type=self.provider_type,
            status=self.status,
            ssh_connection=self.ssh_connection,
            ip=self.ip,
            installation_status=self.installation_status,
            installation_failure=self.installation_failure,
            installation_progress=self.installation_progress,
        )


def _total_count(serialized_as: str) -> Any:
    # The pods envelopes spell it total_count, the availability envelope totalCount: accept both.
    return Field(
        default=None,
        validation_alias=AliasChoices("total_count", "totalCount"),
        serialization_alias=serialized_as,
    )


class PodPage(_Tolerant):
    """One page of ``GET /pods/``: ``{total_count, offset, limit, data}``; ``data: null`` is empty."""

    total_count: int | None = _total_count("total_count")
    offset: int | None = None
    limit: int | None = None
    data: ListOrNull[Pod] = Field(default_factory=list)


# --- GPU offers (GET /availability/gpus and /availability/multi-node) -----------------------------


class ResourceRange(_Tolerant):
    """What an offer allows for disk (GB), vCPUs or memory (GB): bounds, default, step, price."""

    min_count: int | None = Field(default=None, alias="minCount")
    default_count: int | None = Field(default=None, alias="defaultCount")
    max_count: int | None = Field(default=None, alias="maxCount")
    price_per_unit: float | None = Field(default=None, alias="pricePerUnit")
    step: int | None = None
    default_included_in_price: bool | None = Field(default=None, alias="defaultIncludedInPrice")
    additional_info: str | None = Field(default=None, alias="additionalInfo")

    def problem(self, value: int) -> str | None:
        """Why ``value`` is not allowed (``None`` when it is); unknown bounds allow anything."""
        if self.min_count is not None and value < self.min_count:
            return f"below the minimum {self.min_count}"
        if self.max_count is not None and value > self.max_count:
            return f"above the maximum {self.max_count}"
        base = self.min_count or 0
        if self.step and (value - base) % self.step:
            grid = f"{base} plus a multiple of {self.step}" if base else f"a multiple of {self.step}"
            return f"not {grid}"
        return None

    def describe(self) -> str:
        """The allowed values in words, e.g. ``"50 to 1000 in steps of 10"``."""
        low = "any" if self.min_count is None else str(self.min_count)
        high = "any" if self.max_count is None else str(self.max_count)
        text = f"{low} to {high}"
        return f"{text} in steps of {self.step}" if self.step and self.step > 1 else text


class OfferPrices(_Tolerant):
    """The prices of an offer, per hour for the whole offer (every GPU of it)."""

    on_demand: float | None = Field(default=None, alias="onDemand")
    community_price: float | None = Field(default=None, alias="communityPrice")
    is_variable: bool | None = Field(default=None, alias="isVariable")
    currency: str | None = None

    @property
    def price(self) -> float | None:
        """The price a pod would bill: the community price when there is one, else on-demand."""
        return self.community_price if self.community_price is not None else self.on_demand


class GpuOffer(_Tolerant):
    """One rentable configuration from the availability list: where, which GPUs, what it costs."""

    cloud_id: str = Field(alias="cloudId")
    gpu_type: EnumText = Field(alias="gpuType")
    gpu_count: int = Field(alias="gpuCount")
    socket: EnumText | None = None
    provider: EnumText | None = None
    data_center: str | None = Field(default=None, alias="dataCenter")
    country: str | None = None
    region: str | None = None
    gpu_memory: int | None = Field(default=None, alias="gpuMemory")
    disk: ResourceRange = Field(default_factory=ResourceRange)
    vcpu: ResourceRange = Field(default_factory=ResourceRange)
    memory: ResourceRange = Field(default_factory=ResourceRange)
    internet_speed: float | None = Field(default=None, alias="internetSpeed")
    interconnect: float | None = None
    interconnect_type: str | None = Field(default=None, alias="interconnectType")
    provisioning_time: float | None = Field(default=None, alias="provisioningTime")
    stock_status: EnumText | None = Field(default=None, alias="stockStatus")
    security: EnumText | None = None
    prices: OfferPrices = Field(default_factory=OfferPrices)
    images: ListOrNull[str] = Field(default_factory=list)
    is_spot: bool | None = Field(default=None, alias="isSpot")
    prepaid_time: float | None = Field(default=None, alias="prepaidTime")


class OfferPage(_Tolerant):
    """One page of the availability list: ``{items, totalCount}`` (``total_count`` accepted too).

    ``items`` is required (``null`` is an empty page): a 200 of another shape (``{}``, an
    ``{"error": ...}`` or ``{"data": ...}`` envelope) is not "no offers". Read as an empty list, it
    would make a capacity event trigger see capacity gone and fire a second DAG run when the next
    good answer shows the same offers, and a create report "no offer" for a garbled answer.
    """

    items: ListOrNull[GpuOffer]
    total_count: int | None = _total_count("totalCount")


# --- the create request (POST /pods/) -------------------------------------------------------------

#: The image a pod gets when none is named and the offer has it (the platform's base image).
DEFAULT_IMAGE = "ubuntu_22_cuda_12"
#: The image name the API expects together with a ``customTemplateId``.
CUSTOM_TEMPLATE_IMAGE = "custom_template"


def _env_mapping(value: Any) -> Any:
    # Accepted as a mapping or in the wire form [{"key", "value"}]; the values are never echoed
    # in an error (they are often tokens).
    if value is None:
        return {}
    if isinstance(value, list):
        pairs: dict[Any, Any] = {}
        for item in value:
            if not isinstance(item, Mapping) or "key" not in item:
                raise PrimeConfigError("env_vars: each entry of the list form must be {key, value}")
            pairs[item["key"]] = item.get("value")
        value = pairs
    if not isinstance(value, Mapping):
        raise PrimeConfigError(f"env_vars must map names to values, got a {type(value).__name__}")
    for key, text in value.items():
        if not isinstance(key, str) or not key.strip():
            raise PrimeConfigError(f"env_vars: the name {key!r} is not a non-empty string")
        if not isinstance(text, str):
            raise PrimeConfigError(f"env_vars: the value of {key} is not a string ({type(text).__name__})")
    return dict(value)


class PodRequest(BaseModel):
    """What to create: the ``POST /pods/`` request, built from an offer (:meth:`from_offer`) or in full.

    :meth:`to_body` writes the exact body the official CLI sends. Construction checks types and
    the environment variables; :meth:`from_offer` also checks the sizes and the image against the
    offer.
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    name: str
    cloud_id: str = Field(alias="cloudId")
    gpu_type: str = Field(alias="gpuType")
    gpu_count: int = Field(alias="gpuCount", gt=0)
    socket: str | None = None
    disk_size: int | None = Field(default=None, alias="diskSize", gt=0)
    vcpus: int | None = Field(default=None, gt=0)
    memory: int | None = Field(default=None, gt=0)
    image: str | None = None
    data_center_id: str | None = Field(default=None, alias="dataCenterId")
    max_price: float | None = Field(default=None, alias="maxPrice", gt=0)
    country: str | None = None
    security: str | None = None
    jupyter_password: str | None = Field(default=None, alias="jupyterPassword", repr=False)
    auto_restart: bool = Field(default=False, alias="autoRestart")
    custom_template_id: str | None = Field(default=None, alias="customTemplateId")
    env_vars: Annotated[dict[str, str], BeforeValidator(_env_mapping)] = Field(
        default_factory=dict, alias="envVars", repr=False
    )
    provider_type: str | None = Field(default=None, alias="providerType")
    team_id: str | None = Field(default=None, alias="teamId")
    disks: list[str] | None = None

    def secret_values(self) -> tuple[str, ...]:
        """The values no message about this request may show: every env value and the Jupyter
        password, from :data:`MIN_SECRET_LENGTH` characters on (shorter ones, like Airflow's
        masker, are left: scrubbing ``1`` or ``true`` would garble every message)."""
        values = [*self.env_vars.values(), self.jupyter_password or ""]
        return tuple(value for value in values if len(value) >= MIN_SECRET_LENGTH)

    @field_validator("name")
    @classmethod
    def _named(cls, value: str) -> str:
        # The name is how a pod is found again after a create whose answer was lost.
        if not value.strip():
            raise PrimeConfigError(
                "name: a pod needs a non-empty name (it identifies the pod across retries)"
            )
        return value

    @field_validator("max_price")
    @classmethod
    def _finite_price(cls, value: float | None) -> float | None:
        # inf passes gt=0 and nan passes nothing yet fails nothing: refuse both here, before any
        # request (the body could not even be sent as JSON).
        if value is not None and not math.isfinite(value):
            raise PrimeConfigError(f"max_price must be a finite price per hour in USD, got {value!r}")
        return value

    @model_validator(mode="after")
    def _template_image(self) -> PodRequest:
        if self.custom_template_id and self.image != CUSTOM_TEMPLATE_IMAGE:
            raise PrimeConfigError(
                f"image={self.image!r}: with custom_template_id the image must be {CUSTOM_TEMPLATE_IMAGE!r}"
            )
        if self.image == CUSTOM_TEMPLATE_IMAGE and not self.custom_template_id:
            raise PrimeConfigError(f"image={CUSTOM_TEMPLATE_IMAGE!r} needs a custom_template_id")
        return self

    @classmethod
    def from_offer(
        cls,
        offer: GpuOffer,
        *,
        name: str,
        image: str | None = None,
        disk_size: int | None = None,
        vcpus: int | None = None,
        memory: int | None = None,
        env_vars: Mapping[str, str] | None = None,
        team_id: str | None = None,
        max_price: float | None = None,
        jupyter_password: str | None = None,
        auto_restart: bool = False,
        custom_template_id: str | None = None,
        disks: list[str] | None = None,
    ) -> PodRequest:
        """A request for ``offer``: its identity and location copied, the sizes checked against it.

        Disk, vCPUs and memory default to the offer's ``defaultCount``. The image defaults to
        ``ubuntu_22_cuda_12`` when the offer has it, else the offer's first image (with a
        ``custom_template_id``, to ``custom_template``). Raises :class:`PrimeConfigError` naming the
        field, the value and what the offer allows.
        """
        where = f"offer {offer.cloud_id}"
        sizes: dict[str, int | None] = {}
        for field, value, allowed in (
            ("disk_size", disk_size, offer.disk),
            ("vcpus", vcpus, offer.vcpu),
            ("memory", memory, offer.memory),
        ):
            if value is None:
                sizes[field] = allowed.default_count
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise PrimeConfigError(f"{field}={value!r} is not a whole number")
            problem = allowed.problem(value)
            if problem:
                raise PrimeConfigError(
                    f"{field}={value} does not fit {where}: {problem} (allowed: {allowed.describe()})"
                )
            sizes[field] = value
        chosen_image = image or _default_image(offer, custom_template_id)
        if (
            chosen_image is not None
            and chosen_image != CUSTOM_TEMPLATE_IMAGE
            and offer.images
            and chosen_image not in offer.images
        ):
            raise PrimeConfigError(
                f"image={chosen_image!r} is not one of the images of {where}: {', '.join(offer.images)}"
            )
        return _validated(
            cls,
            {
                "name": name,
                "cloud_id": offer.cloud_id,
                "gpu_type": offer.gpu_type,
                "gpu_count": offer.gpu_count,
                "socket": offer.socket,
                "image": chosen_image,
                "data_center_id": offer.data_center,
                "max_price": max_price,
                "country": offer.country,
                "security": offer.security,
                "jupyter_password": jupyter_password,
                "auto_restart": auto_restart,
                "custom_template_id": custom_template_id,
                "env_vars": env_vars,
                "provider_type": offer.provider,
                "team_id": team_id,
                "disks": disks,
                **sizes,
            },
        )

    @classmethod
    def from_body(cls, body: Any) -> PodRequest:
        """Read a create body back (what :meth:`to_body` writes); :class:`PrimeConfigError` if unusable."""
        if not isinstance(body, Mapping) or not isinstance(body.get("pod"), Mapping):
            raise PrimeConfigError('a create body is an object with a "pod" object')
        provider, team = body.get("provider"), body.get("team")
        # Keys this model does not know (sshKeyId, prepaidForHr...) are ignored, as the API does.
        known = {info.alias or name for name, info in cls.model_fields.items()}
        fields = {key: value for key, value in body["pod"].items() if key in known}
        fields["providerType"] = provider.get("type") if isinstance(provider, Mapping) else None
        fields["teamId"] = team.get("teamId") if isinstance(team, Mapping) else None
        fields["disks"] = body.get("disks")
        return _validated(cls, fields)

    def to_body(self) -> dict[str, Any]:
        """The JSON body of ``POST /pods/``, key for key what the official ``prime`` CLI sends."""
        return {
            "pod": {
                "name": self.name,
                "cloudId": self.cloud_id,
                "gpuType": self.gpu_type,
                "socket": self.socket,
                "gpuCount": self.gpu_count,
                "diskSize": self.disk_size,
                "vcpus": self.vcpus,
                "memory": self.memory,
                "image": self.image,
                "dataCenterId": self.data_center_id,
                "maxPrice": self.max_price,
                "country": self.country,
                "security": self.security,
                "jupyterPassword": self.jupyter_password,
                "autoRestart": self.auto_restart,
                "customTemplateId": self.custom_template_id,
                "envVars": [{"key": key, "value": value} for key, value in self.env_vars.items()],
            },
            "provider": {"type": self.provider_type} if self.provider_type else {},
            "disks": list(self.disks) if self.disks is not None else None,
            "team": {"teamId": self.team_id} if self.team_id else None,
        }


def _default_image(offer: GpuOffer, custom_template_id: str | None) -> str | None:
    if custom_template_id:
        return CUSTOM_TEMPLATE_IMAGE
    if DEFAULT_IMAGE in offer.images or not offer.images:
        return DEFAULT_IMAGE
    return offer.images[0]


def _validated(cls: type[PodRequest], fields: Mapping[str, Any]) -> PodRequest:
    """Build a request; pydantic's errors become one PrimeConfigError that names fields, not values."""
    try:
        return cls.model_validate(fields)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'request'}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
        )
        raise PrimeConfigError(f"invalid pod request: {problems}") from None


# --- the key's identity (GET /user/whoami) --------------------------------------------------------


class ScopeGrant(_Tolerant):
    """What a key may do with one resource kind (``instances``, ``availability``...)."""

    read: bool = False
    write: bool = False


def _scope_object(value: Any) -> Any:
    # The API sends {NAME: {read, write} | null}; older simulators sent a list like ["instances:read"].
    if value is None:
        return {}
    if not isinstance(value, list):
        return value
    scope: dict[str, dict[str, bool]] = {}
    for item in value:
        if isinstance(item, str):
            name, _, right = item.partition(":")
            grant = scope.setdefault(name, {})
            grant[right or "read"] = True
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            scope[item["name"]] = {key: bool(item.get(key)) for key in ("read", "write")}
    return scope


class WhoAmI(_Tolerant):
    """Whom a key belongs to and what it may do: ``GET /user/whoami`` (with or without ``data``)."""

    id: str | None = None
    email: str | None = None
    name: str | None = None
    slug: str | None = None
    scope: Annotated[dict[str, ScopeGrant | None], BeforeValidator(_scope_object)] = Field(
        default_factory=dict
    )

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and isinstance(value.get("data"), Mapping):
            return value["data"]
        return value

    @property
    def identity(self) -> str | None:
        """The most readable name of the key's owner: name, else email, slug or id."""
        return self.name or self.email or self.slug or self.id

    def scope_summary(self) -> str:
        """The scopes in short text, e.g. ``"availability: read; instances: read, write"``."""
        parts = []
        for kind in sorted(self.scope):
            grant = self.scope[kind]
            rights = [right for right in ("read", "write") if grant is not None and getattr(grant, right)]
            parts.append(f"{kind}: {', '.join(rights) or 'none'}")
        return "; ".join(parts)
