"""``permissions.yaml``: who may do what on the domain: roles, actions, dataset access and
the syft service paths each role may call.

The JWT gate maps every syft API call to one of our actions with
`action_for_path` and asks `Permissions.role_may(role, action)`. A syft path that
is not in `SYFT_PATH_ACTIONS` is left to syft's own role checks (reading one's
own requests, running approved code, fetching results, ...): the map lists the
calls that change the domain or reveal other people's data, so that our policy
can be stricter than syft's defaults, never looser.

    permissions = Permissions.from_file("policies/permissions.yaml")
    permissions.role_may("data_scientist", "submit_code")          # True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from domain_setup.policy.roles import ROLES
from domain_setup.policy.schema import (DOTTED_RE, TEXT, WHO_SCHEMA, DatasetAccess, DictOf,
                                        Scalar, Struct, choice, load_policy, names_list)

ACTIONS: tuple[str, ...] = (
    "list_datasets", "read_mock", "read_private", "upload_dataset", "manage_accounts",
    "change_settings", "submit_code", "approve_requests", "read_others_requests",
    "issue_tokens", "revoke_tokens", "read_audit",
)
ANY_DATASET = "*"
ANY_SYFT_PATH = "*"


@dataclass(frozen=True)
class PermissionRules:
    """The content of permissions.yaml."""

    roles: dict[str, frozenset[str]]
    datasets: dict[str, DatasetAccess]
    allow_signup: bool = False
    syft_paths: dict[str, frozenset[str]] = field(default_factory=dict)  # "*": every path


_ACTION_LIST = names_list(choice(ACTIONS, "action"), what="action")
_SYFT_PATH_LIST = names_list(Scalar(str, lambda v: None if v == ANY_SYFT_PATH or DOTTED_RE.match(v)
                                    else f"{v!r} is not a syft service path"), what="path")
PERMISSIONS_SCHEMA = Struct(
    required={"roles": Struct(required={role: _ACTION_LIST for role in ROLES}),
              "datasets": DictOf(Struct(optional=WHO_SCHEMA), key=TEXT),
              "syft_paths": Struct(required={role: _SYFT_PATH_LIST for role in ROLES})},
    optional={"allow_signup": Scalar(bool)},
)


def load_permissions(path: str | Path) -> PermissionRules:
    """The role actions and dataset access rules of permissions.yaml."""
    data = load_policy(path, PERMISSIONS_SCHEMA)
    datasets = {name: DatasetAccess.of(rule) for name, rule in data["datasets"].items()}
    return PermissionRules(roles={r: frozenset(a) for r, a in data["roles"].items()},
                           datasets=datasets, allow_signup=data.get("allow_signup", False),
                           syft_paths={r: frozenset(p) for r, p in data["syft_paths"].items()})


ENABLE_SIGNUP = "enable_signup"  # derived action: change_settings and allow_signup: true

# Real service paths of syft 0.9.5 (`@service_method(path=...)` in
# syft/service/*/*_service.py), grouped by the action they need.
_PATHS_BY_ACTION: dict[str, tuple[str, ...]] = {
    "list_datasets": (
        "dataset.get_all", "dataset.search", "dataset.get_by_id",
        "dataset.get_by_action_id", "dataset.get_assets_by_action_id",
    ),
    "read_mock": ("action.get_mock",),
    "upload_dataset": ("dataset.add", "dataset.delete", "data_subject.add"),
    "manage_accounts": (
        "user.create", "user.update", "user.delete", "user.request_password_reset",
    ),
    ENABLE_SIGNUP: ("settings.allow_guest_signup",),
    "change_settings": (
        "settings.update", "settings.set", "settings.enable_eager_execution",
        "settings.allow_association_request_auto_approval",
        "settings.set_server_side_type_dangerous", "settings.set_email_rate_limit",
        "settings.enable_notifications", "settings.disable_notifications",
        "settings.batch_notifications", "settings.welcome_customize",
        "notifications.settings",
        # custom API endpoints run arbitrary code on the server
        "api.add", "api.update", "api.delete", "api.set_state", "api.set_settings",
        # worker images and pools build and start containers
        "worker_image.submit", "worker_image.build", "worker_image.push",
        "worker_image.remove", "image_registry.add", "image_registry.delete",
        "worker_pool.launch", "worker_pool.add_workers", "worker_pool.scale",
        "worker_pool.delete", "worker_pool.purge_workers",
        "worker_pool.create_pool_request", "worker_pool.create_image_and_pool_request",
        "worker_pool.sync_pool_from_request", "worker.start_workers", "worker.delete",
        # peering with other servers
        "network.add_peer", "network.exchange_credentials_with", "network.update_peer",
        "network.delete_peer_by_id", "network.add_route", "network.add_route_on_peer",
        "network.delete_route", "network.delete_route_on_peer",
        "network.update_route_priority", "network.update_route_priority_on_peer",
        # migrations and low/high-side sync rewrite the store
        "migration.apply_migration_data", "migration.create_migrated_objects",
        "migration.migrate_data", "migration.reset_and_restore",
        "migration._update_object", "sync.sync_items",
    ),
    "approve_requests": (
        "request.apply", "request.undo", "request.add_changes", "request.set_tags",
        "request.delete_by_uid", "code.update", "code.delete",
        "code.store_execution_output", "code_status.create", "code_status.update",
        "code_status.remove",
    ),
    "read_others_requests": ("request.get_all_info", "request.filter_all_info"),
    "submit_code": (
        "code.request_code_execution", "code.submit", "request.submit",
        "project.create_project", "project.add_event", "project.broadcast_event",
    ),
}

SYFT_PATH_ACTIONS: dict[str, str] = {
    path: action for action, paths in _PATHS_BY_ACTION.items() for path in paths
}


def action_for_path(path: str) -> str | None:
    """The action a syft API path needs, or None when syft's own checks decide."""
    return SYFT_PATH_ACTIONS.get(path)


class Permissions:
    """Decisions over the rules of one permissions.yaml."""

    def __init__(self, rules: PermissionRules):
        self.rules = rules

    @classmethod
    def from_file(cls, path: str | Path) -> "Permissions":
        return cls(load_permissions(path))

    @property
    def allow_signup(self) -> bool:
        return self.rules.allow_signup

    def role_may(self, role: str, action: str) -> bool:
        """May an account of `role` perform `action`? Unknown roles may do nothing."""
        if action == ENABLE_SIGNUP:
            return self.rules.allow_signup and self.role_may(role, "change_settings")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        return action in self.rules.roles.get(role, frozenset())

    def role_may_call(self, role: str, syft_path: str) -> bool:
        """Is `syft_path` in the role's `syft_paths` of permissions.yaml? (default deny)"""
        allowed = self.rules.syft_paths.get(role, frozenset())
        return ANY_SYFT_PATH in allowed or syft_path in allowed

    def may_use_dataset(self, email: str, groups: tuple[str, ...] | list[str], role: str,
                        dataset_name: str) -> bool:
        """Does a rule for `dataset_name` or "*" list this user, one of their groups or role?"""
        return any(access is not None and access.matches(email, groups, role)
                   for access in (self.rules.datasets.get(dataset_name),
                                  self.rules.datasets.get(ANY_DATASET)))
