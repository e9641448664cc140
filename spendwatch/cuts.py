"""Cuts: the same hours of usage and cost, grouped by other dimensions.

The Analytics API groups by at most five dimensions per request (``cost_type`` and
``token_type`` not counted), so spendwatch reads the same hours several times, each a *cut*
with its own ``group_by`` and its own stored rows, each complete on its own:

- ``key`` (``usage_hourly`` / ``cost_buckets``): model, workspace, API key, service tier,
  context window. Features, workspaces and keys come from it; it is the cut every older
  surface reads.
- ``price``: model, service tier, context window, inference geo, speed: everything that
  changes a token's price. Estimates of every other cut are priced with it.
- ``people``: product, actor (a user, service account, API key or federated identity), model,
  service tier, speed.
- ``groups``: RBAC group, product, model, service tier, speed. The API counts a user in
  several groups in full in each group's row (any-membership), so rows by group overlap and
  may add up to more than the organization's total; nothing is summed across groups.
- ``members``: actor, RBAC group, model, service tier, speed: who is in which group (rows
  overlap as the groups cut's do); collected when a feature names an RBAC group.
- ``profiles``: user profile, product, model, service tier, speed.
- ``products``: product, workspace, API key, model, service tier: the weekly CSV's rows with
  their product.

The cost of the people, groups and profiles cuts is read by ``cost_type`` only (not by
``token_type``: that would be five rows per group and hour, and cost by cache status comes
from the key, price and products cuts); their tokens still come by cache status from usage.

Cuts other than ``key`` live in ``usage_cuts`` / ``cost_cuts`` (a ``cut`` column; every
dimension column present, null where the cut does not group by it). The legacy Admin API has
no five-dimension limit and no people: for a legacy-source organization only the ``price`` cut
exists, read from its usage report with ``inference_geo`` and ``speed`` (the latter with the
``fast-mode-2026-02-01`` beta header).

Product and people dimensions are only readable by some organizations (Claude Enterprise,
today); a cut the key cannot read is skipped with one line, never a failed run.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every dimension column of a cut row, in row-key order. ``actor`` arrives as an object and is
#: stored as ``actor_key`` (a stable identity) and ``actor_type``.
CUT_DIMENSIONS = ("model", "service_tier", "context_window", "inference_geo", "speed",
                  "product", "actor_key", "actor_type", "rbac_group_id", "user_profile_id",
                  "workspace_id", "api_key_id")


@dataclass(frozen=True)
class Cut:
    """One cut: its name, the Analytics ``group_by`` it asks for, the sources that have it."""

    name: str
    group_by: tuple[str, ...]
    sources: tuple[str, ...] = ("analytics",)
    #: Whether its totals must agree with the key cut's (not so for overlapping RBAC groups).
    additive: bool = True
    #: The cost endpoint's fan-out dimensions (they do not count toward the five).
    cost_fanout: tuple[str, ...] = ("cost_type", "token_type")
    #: Collected when the organization's config names no ``cuts``. User profiles are only
    #: there when the organization names them: ask for that cut in ``cuts``.
    default: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        """The stored dimension columns this cut fills."""
        out: list[str] = []
        for dim in self.group_by:
            out.extend(("actor_key", "actor_type") if dim == "actor" else (dim,))
        return tuple(out)

    def usage_stream(self) -> str:
        return f"usage:{self.name}"

    def cost_stream(self) -> str:
        return f"cost:{self.name}"


PRICE = Cut("price", ("model", "service_tier", "context_window", "inference_geo", "speed"),
            sources=("analytics", "legacy"))
PEOPLE = Cut("people", ("product", "actor", "model", "service_tier", "speed"),
             cost_fanout=("cost_type",))
GROUPS = Cut("groups", ("rbac_group_id", "product", "model", "service_tier", "speed"),
             additive=False, cost_fanout=("cost_type",))
PRODUCTS = Cut("products", ("product", "workspace_id", "api_key_id", "model", "service_tier"))
#: Who is in which RBAC group (a person's usage in full under each of their groups): features
#: defined by RBAC groups are judged on the people cut with this membership. Collected when a
#: feature names an RBAC group, or when ``cuts`` names it.
MEMBERS = Cut("members", ("actor", "rbac_group_id", "model", "service_tier", "speed"),
              additive=False, cost_fanout=("cost_type",), default=False)
PROFILES = Cut("profiles", ("user_profile_id", "product", "model", "service_tier", "speed"),
               cost_fanout=("cost_type",), default=False)

#: Every cut besides ``key``, in collection order (price first: it prices the others).
CUTS: tuple[Cut, ...] = (PRICE, PEOPLE, GROUPS, MEMBERS, PROFILES, PRODUCTS)
CUT_BY_NAME = {c.name: c for c in CUTS}
#: Dimensions that need the organization to have people and product data.
PEOPLE_DIMENSIONS = ("product", "actor", "actor_type", "rbac_group_id", "user_profile_id")


def cut_of_stream(stream: str) -> Cut | None:
    """The cut of a sync stream name (``usage:people`` -> PEOPLE); None for ``usage``/``cost``."""
    _, _, name = stream.partition(":")
    return CUT_BY_NAME.get(name) if name else None


def stream_kind(stream: str) -> str:
    """``usage`` or ``cost``."""
    return stream.partition(":")[0]
