"""The hospital admin's side: the CLI (`python -m domain_setup`), `AdminClient`, uploads,
accounts, review, federation and start/stop/status. Everything but `start` talks to
the running domain over HTTP, as a remote admin would."""

from domain_setup.admin.client import AdminClient

__all__ = ["AdminClient"]
