"""What syft 0.9.5 lets an account below admin write or read beyond its own objects, closed.

Each guard wraps one syft service method on the server (syft dispatches a call by
looking the method up on the service object, so a class attribute replaced here is what
runs) and refuses, with a fixed one-line reason and no server path, what syft itself
does not check:

* ``blob_storage.allocate``: a file-name extension is what syft appends to the blob's
  path; only short alphanumeric ones (``.jpeg``), never ``/``;
* ``blob_storage.write_to_disk``: syft checks only that the caller may *read* the entry,
  and every dataset mock is readable, so anyone could overwrite a mock. Here a blob is
  written as the blob route writes it (`server/blob_upload`): by the account that
  allocated the entry, once, of its allocated size, inside the blob folder;
* ``action.set``: syft gives everyone read access to the blob a *twin* object's mock names,
  whatever blob that is, and lets an object point at another account's blob. Below
  data owner nobody stores a twin (only datasets are twins), and below admin an object
  may name only blobs its caller allocated;
* ``notifications.resolve_object``: syft returns any object of any service the caller
  may read, users' signing keys and password hashes included; here only requests, code
  and code statuses (what a notification links to);
* ``project.broadcast_event`` and ``project.sync``: syft computes, then ignores, whether
  the caller is a member of the project; here a non-member is refused;
* ``code.call``: syft asks a single-execution output policy whether it is still valid and
  ignores the answer, so approved code ran again at every call; here a used-up policy
  sends the call to syft's own output history (the researcher fetches the result she
  had), and the dispatch refuses a second run besides (`ApprovalLedger.claim_run`).

The root admin is trusted with every path (`permissions.yaml`), and is not guarded.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from common import syft_compat
from common.syft_compat import requires

_BLOB = "syft.service.blob_storage.service:BlobStorageService"
_ACTION = "syft.service.action.action_service:ActionService"
_NOTIFICATIONS = "syft.service.notification.notification_service:NotificationService"
_PROJECTS = "syft.service.project.project_service:ProjectService"
_CODE = "syft.service.code.user_code_service:UserCodeService"
_EXCEPTION = "syft.types.errors:SyftException"
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}")
MAX_EXTENSIONS = 4
RESOLVABLE_SERVICES = frozenset({"RequestService", "UserCodeService", "UserCodeStatusService"})
BYTES_HEADER = 33  # sys.getsizeof(b"") on CPython 3.11: stock clients declare len + 33


def _refuse(message: str) -> Exception:
    return syft_compat.resolve(_EXCEPTION)(public_message=message)


def _role_at_least(context: Any, role: str) -> bool:
    return context.role.value >= syft_compat.service_role(role).value


def _argument(name: str, position: int, args: tuple, kwargs: dict) -> Any:
    """A service method's argument, given by position (after the context) or by name (syft
    also passes extra keywords, such as communication_protocol, that its wrapper drops)."""
    return args[position] if len(args) > position else kwargs.get(name)


def _guard(target: str, make: Callable[[Callable], Callable]) -> None:
    """Replace the service method ``module:Class.method`` with ``make(original)`` (once)."""
    module_class, _, method = target.rpartition(".")
    service = syft_compat.resolve(module_class)
    original = getattr(service, method)
    if getattr(original, "pneumosyft_guard", False):
        return
    guarded = make(original)
    guarded.pneumosyft_guard = True  # type: ignore[attr-defined]
    guarded.__name__, guarded.__qualname__ = original.__name__, original.__qualname__
    setattr(service, method, guarded)


@requires(f"{_BLOB}.allocate", f"{_BLOB}.write_to_disk", _EXCEPTION)
def guard_blob_writes() -> None:
    """Blob entries with plain extensions; blobs written once by their allocator."""
    from domain_setup.server.blob_upload import BlobRefusal, allocated_target, write_once

    def allocate(original: Callable) -> Callable:
        def guarded(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            obj = _argument("obj", 0, args, kwargs)
            extensions = list(getattr(obj, "extensions", None) or [])
            if len(extensions) > MAX_EXTENSIONS or not all(
                    isinstance(e, str) and _EXTENSION.fullmatch(e) for e in extensions):
                raise _refuse("a blob's extensions are up to 4 of '.' and 1 to 16 letters or "
                              "digits (e.g. '.jpeg')")
            return original(self, context, *args, **kwargs)
        return guarded

    def write_to_disk(original: Callable) -> Callable:
        def guarded(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            uid, data = _argument("uid", 0, args, kwargs), _argument("data", 1, args, kwargs)
            try:
                entry = self.stash.get_by_uid(context.server.verify_key, uid=uid).unwrap()
            except Exception:  # syft's NotFoundException and friends
                entry = None
            if entry is None or str(entry.uploaded_by) != str(context.credentials):
                raise _refuse("unknown blob entry, or allocated by another account")
            if not isinstance(data, (bytes, bytearray)) or \
                    len(data) not in (entry.file_size, entry.file_size - BYTES_HEADER):
                raise _refuse(f"a blob must be exactly its allocated {entry.file_size} bytes")
            try:
                write_once(allocated_target(context.server, entry), [bytes(data)])
            except BlobRefusal as refusal:
                raise _refuse(refusal.reason) from None
            except OSError:
                raise _refuse("the blob could not be written (the domain's log says why)") \
                    from None
            return syft_compat.resolve("syft.service.response:SyftSuccess")(
                message="File successfully saved.")
        return guarded

    _guard(f"{_BLOB}.allocate", allocate)
    _guard(f"{_BLOB}.write_to_disk", write_to_disk)


@requires(f"{_ACTION}.set", "syft.types.twin_object:TwinObject", _EXCEPTION)
def guard_action_objects() -> None:
    """No twins below data owner; below admin, objects name only their caller's blobs."""
    twin_type = syft_compat.resolve("syft.types.twin_object:TwinObject")

    def action_set(original: Callable) -> Callable:
        def guarded(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            action_object = _argument("action_object", 0, args, kwargs)
            if not _role_at_least(context, "admin"):
                twin = isinstance(action_object, twin_type)
                if twin and not _role_at_least(context, "data_owner"):
                    raise _refuse("only a data owner stores objects with a private and a "
                                  "mock part (a dataset's); send plain objects")
                parts = (action_object.private_obj, action_object.mock_obj) if twin \
                    else (action_object,)
                blob_service = context.server.services.blob_storage
                for part in parts:
                    blob_id = getattr(part, "syft_blob_storage_entry_id", None)
                    if blob_id is not None and not _allocated_by(blob_service, blob_id,
                                                                 context):
                        raise _refuse("an object may name only blobs its sender allocated")
            return original(self, context, *args, **kwargs)
        return guarded

    _guard(f"{_ACTION}.set", action_set)


def _allocated_by(blob_service: Any, blob_id: Any, context: Any) -> bool:
    try:
        entry = blob_service.stash.get_by_uid(context.server.verify_key, uid=blob_id).unwrap()
    except Exception:  # not found
        return False
    return str(entry.uploaded_by) == str(context.credentials)


@requires(f"{_NOTIFICATIONS}.resolve_object", _EXCEPTION)
def guard_object_links() -> None:
    """A notification's link resolves to a request, code or code status only."""
    def resolve_object(original: Callable) -> Callable:
        def guarded(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            linked_obj = _argument("linked_obj", 0, args, kwargs)
            service = getattr(getattr(linked_obj, "service_type", None), "__name__", "")
            if not _role_at_least(context, "admin") and service not in RESOLVABLE_SERVICES:
                raise _refuse("a notification links to a request, code or a code status "
                              "only")
            return original(self, context, *args, **kwargs)
        return guarded

    _guard(f"{_NOTIFICATIONS}.resolve_object", resolve_object)


@requires(f"{_PROJECTS}.broadcast_event", f"{_PROJECTS}.sync", _EXCEPTION)
def guard_projects() -> None:
    """Only a project's members add events to it or read them."""
    def member_only(original: Callable, project_id_of: Callable[..., Any]) -> Callable:
        def guarded(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            if not _role_at_least(context, "admin"):
                try:
                    project = self.stash.get_by_uid(context.server.verify_key,
                                                    uid=project_id_of(args, kwargs)).unwrap()
                except Exception:  # not found
                    project = None
                if project is None or not project.has_permission(context.credentials):
                    raise _refuse("only a member of a project adds events to it or reads them")
                event = _argument("project_event", 0, args, kwargs)
                creator = getattr(event, "creator_verify_key", None)
                if creator is not None and str(creator) != str(context.credentials):
                    raise _refuse("an event is sent by the account that made it")
            return original(self, context, *args, **kwargs)
        return guarded

    _guard(f"{_PROJECTS}.broadcast_event", lambda original: member_only(
        original, lambda args, kwargs: _argument("project_event", 0, args, kwargs).project_id))
    _guard(f"{_PROJECTS}.sync", lambda original: member_only(
        original, lambda args, kwargs: _argument("project_id", 0, args, kwargs)))


@requires(f"{_CODE}.is_execution_allowed",
          "syft.service.code.user_code_service:IsExecutionAllowedEnum")
def guard_single_execution() -> None:
    """An output policy that is used up (``is_valid`` false) stops execution."""
    allowed = syft_compat.resolve("syft.service.code.user_code_service:IsExecutionAllowedEnum")

    def is_execution_allowed(original: Callable) -> Callable:
        def guarded(self: Any, code: Any, context: Any, output_policy: Any) -> Any:
            verdict = original(self, code=code, context=context, output_policy=output_policy)
            if verdict is allowed.ALLOWED and not output_policy.is_valid(context):
                return allowed.INVALID_OUTPUT_POLICY
            return verdict
        return guarded

    _guard(f"{_CODE}.is_execution_allowed", is_execution_allowed)


def apply_guards() -> None:
    """Every guard of this module (idempotent); the server calls it once at start."""
    guard_blob_writes()
    guard_action_objects()
    guard_object_links()
    guard_projects()
    guard_single_execution()
