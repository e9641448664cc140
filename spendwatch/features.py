"""Features: names users give to groups of API keys, workspaces, products, people or RBAC
groups.

Neither API has a feature dimension. A rule in config (``[[features]]``) matches by API key ID,
API key name glob, workspace ID or workspace name glob, product, person (e-mail glob) or RBAC
group ID; the first rule that matches wins. Usage matching no rule shows under its API key's
name, else its workspace's name (on the people cut: its person's label): it never disappears.

Which cut of the API's data features are judged on (``spendwatch.config.feature_basis``): the
key cut while rules name only keys and workspaces; the products cut (product, workspace, key)
once one names a product; the people cut (product, actor) once one names a person or an RBAC
group. An API key is an actor there, so key rules still match; workspaces are not in that cut.
"""

from __future__ import annotations

import hashlib
import hmac
from fnmatch import fnmatchcase
from typing import Sequence

from spendwatch.config import FeatureRule

DEFAULT_WORKSPACE = "Default workspace"
NO_API_KEY = "(no API key)"
#: Usage the API could attribute to no identity (``actor`` null).
NO_IDENTITY = "(no identity)"
#: Actor types that are people (pseudonymized with ``[privacy] pseudonymize_people``).
PERSON_TYPES = ("user_actor", "federated_actor")
#: Actor types that are not people: everything else (a type the API adds later too) is
#: treated as a person, so it is never shown unpseudonymized by mistake.
NOT_PEOPLE = ("api_actor", "service_account_actor")


def is_person(actor_type: str | None) -> bool:
    return actor_type is not None and actor_type not in NOT_PEOPLE


def pseudonym(salt: str, organization: str, actor_key: str) -> str:
    """A stable pseudonym for a person: the same warehouse always gives the same one (8 hex
    digits: two people of 10,000 share one with a chance of about 1 in 100)."""
    digest = hmac.new(salt.encode(), f"{organization}\0{actor_key}".encode(), hashlib.sha256)
    return "person-" + digest.hexdigest()[:8]


def person_label(actor_key: str | None, actor_type: str | None, email: str | None,
                 name: str | None, deleted: bool, api_key_name: str | None,
                 pseudonym_text: str | None = None) -> str:
    """What an actor is called on every surface: a person's e-mail address (else name), an
    API key's name, a service account's ID; a deleted user as such; the pseudonym instead
    for people when the organization asks for pseudonyms. Never a raw ID where a name exists.
    """
    if actor_key is None:
        return NO_IDENTITY
    if pseudonym_text is not None and is_person(actor_type):
        return pseudonym_text
    if actor_type == "api_actor":
        return f"API key {api_key_label(actor_key, api_key_name)}"
    if email:
        return email
    if deleted:
        return f"deleted user ({actor_key[-6:]})"
    if name:
        return name
    if actor_type == "service_account_actor":
        return f"service account {actor_key}"
    if actor_type == "federated_actor":
        return actor_key.removeprefix("federated:")
    return actor_key


def workspace_label(workspace_id: str | None, name: str | None) -> str:
    """What a workspace is called on every surface: its name, else its ID.

    The legacy API reports the default workspace as a null ID.
    """
    if name:
        return name
    return workspace_id or DEFAULT_WORKSPACE


def api_key_label(api_key_id: str | None, name: str | None) -> str:
    """An API key's name, else its ID; usage no key authenticated (Console) is labelled so."""
    if name:
        return name
    return api_key_id or NO_API_KEY


def _matches(rule: FeatureRule, organization: str, workspace_id: str | None,
             workspace_name: str | None, api_key_id: str | None,
             api_key_name: str | None, product: str | None, email: str | None,
             rbac_groups: Sequence[str]) -> bool:
    if rule.organizations and organization not in rule.organizations:
        return False
    if api_key_id and api_key_id in rule.api_key_ids:
        return True
    if api_key_name and any(fnmatchcase(api_key_name, p) for p in rule.api_key_names):
        return True
    if workspace_id and workspace_id in rule.workspace_ids:
        return True
    if workspace_name and any(fnmatchcase(workspace_name, p) for p in rule.workspace_names):
        return True
    if product and product in rule.products:
        return True
    # E-mail addresses compare without case (RFC 5321 local parts may differ, but no mail
    # system in use treats Ana@ and ana@ as two people).
    if email and any(fnmatchcase(email.lower(), p.lower()) for p in rule.people):
        return True
    return any(g in rule.rbac_groups for g in rbac_groups)


def feature_for(rules: Sequence[FeatureRule], organization: str, workspace_id: str | None,
                workspace_name: str | None, api_key_id: str | None,
                api_key_name: str | None, *, product: str | None = None,
                email: str | None = None, rbac_groups: Sequence[str] = (),
                fallback: str | None = None) -> str:
    """The feature of usage from this API key in this workspace (and, on the cuts that have
    them, this product, this person's e-mail address and RBAC groups): the first rule that
    matches, else ``fallback``, else the API key's name, else the workspace's."""
    for rule in rules:
        if _matches(rule, organization, workspace_id, workspace_name, api_key_id, api_key_name,
                    product, email, rbac_groups):
            return rule.name
    if fallback is not None:
        return fallback
    if api_key_id:
        return api_key_label(api_key_id, api_key_name)
    return workspace_label(workspace_id, workspace_name)
