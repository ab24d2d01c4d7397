"""The policy a domain enforces: one module per policy file, the schema engine they share,
the roles table, the federation's member list, and the snapshot that holds them all.

    schema       strict YAML with `file:line: reason` errors (Struct, ListOf, ...)
    roles        the roles, lowest first
    accounts     accounts.yaml          permissions  permissions.yaml (and the syft paths)
    approval     approval.yaml          privacy      privacy.yaml
    federation   the member hospitals of secure rounds (kept in the state directory)
    snapshot     DomainPolicies (one validated snapshot) and LivePolicies (the one in force)
"""
