"""Every syft 0.9.5 internal that PneumoSyft touches, behind one named function each.

syft's public surface (``sy.Dataset``, ``sy.syft_function``, clients) is used
where it is; everything else — private modules, stashes, class checks, the
patches' targets, muting syft's chatter — goes through this module, so that an
upgrade breaks here, loudly and by name, rather than somewhere downstream.
Each function declares the syft names it relies on with ``@requires``;
``missing_names()`` resolves every one of them against the installed syft:

    >>> missing_names()          # [] on syft 0.9.5
    []

The hospital's server and the tests call it (``tests/test_syft_compat.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from typing import Any, Callable, Iterator

_REQUIRED: dict[str, tuple[str, ...]] = {}


def requires(*names: str) -> Callable:
    """Declare the syft names (``module:attr.attr``) a compat function relies on."""
    def register(func: Callable) -> Callable:
        _REQUIRED[func.__name__] = names
        return func
    return register


def resolve(name: str) -> Any:
    """The object named ``module:attr.attr`` (AttributeError/ImportError when absent)."""
    module_name, _, attrs = name.partition(":")
    value: Any = importlib.import_module(module_name)
    for attr in filter(None, attrs.split(".")):
        fields = getattr(value, "model_fields", None) or {}  # pydantic fields of syft objects
        value = fields[attr] if attr in fields and not hasattr(value, attr) else getattr(value, attr)
    return value


def missing_names(required: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """One line per syft name a compat function expects and the installed syft lacks."""
    problems = []
    for function, names in (required or _REQUIRED).items():
        for name in names:
            try:
                resolve(name)
            except (ImportError, AttributeError):
                problems.append(f"syft_compat.{function} expects {name}, "
                                "which the installed syft does not have")
    return problems


# --------------------------------------------------------------------------- types

@requires("syft.service.response:SyftError")
def is_syft_error(value: Any) -> bool:
    """Is `value` a SyftError (syft returns these instead of raising, in places)?"""
    return isinstance(value, resolve("syft.service.response:SyftError"))


def error_text(value: Any) -> str:
    """The message of a SyftError or of an exception syft raised, on one line."""
    message = str(getattr(value, "public_message", None) or getattr(value, "message", None)
                  or value).strip()
    return message.splitlines()[0] if message else type(value).__name__


@requires("syft.service.code.user_code:UserCode")
def is_user_code(value: Any) -> bool:
    return isinstance(value, resolve("syft.service.code.user_code:UserCode"))


@requires("syft.service.request.request:Request")
def is_request(value: Any) -> bool:
    return isinstance(value, resolve("syft.service.request.request:Request"))


@requires("syft.service.policy.policy:Constant")
def is_constant(rule: Any) -> bool:
    """Is an input-policy rule a constant (a value in the request, not an asset)?"""
    return isinstance(rule, resolve("syft.service.policy.policy:Constant"))


@requires("syft.types.uid:UID")
def to_uid(text: str) -> Any:
    return resolve("syft.types.uid:UID")(text)


@requires("syft.types.uid:UID")
def uids_in(values: list) -> list[str]:
    """The syft UIDs among `values`, as text."""
    uid_type = resolve("syft.types.uid:UID")
    return [str(v) for v in values if isinstance(v, uid_type)]


# --------------------------------------------------------------------------- user code

@requires("syft.service.code.user_code:UserCode.input_policy_init_kwargs")
def input_policy_rules(code: Any) -> dict:
    """{kwarg: rule} of a UserCode (or anything with ``input_policy_init_kwargs``),
    merged over servers; a rule is an asset UID, ``Matches(val=UID)`` or a Constant."""
    rules: dict = {}
    for per_server in (getattr(code, "input_policy_init_kwargs", None) or {}).values():
        if isinstance(per_server, dict):
            rules.update(per_server)
    return rules


INPUT_POLICY, OUTPUT_POLICY = "MixedInputPolicy", "SingleExecutionExactOutput"


@requires("syft.service.policy.policy:MixedInputPolicy",
          "syft.service.policy.policy:SingleExecutionExactOutput",
          "syft.service.policy.policy:Constant", "syft.service.policy.policy:Matches")
def policy_problems(code: Any) -> list[str]:
    """Why a UserCode's policies are not the two this domain runs (empty: fine): syft's
    MixedInputPolicy with asset matches and plain constants, SingleExecutionExactOutput;
    the function name syft calls must be the function's own."""
    problems = []
    for what, wanted in (("input", INPUT_POLICY), ("output", OUTPUT_POLICY)):
        kind = getattr(code, f"{what}_policy_type", None)
        if not (isinstance(kind, type) and kind is resolve(f"syft.service.policy.policy:{wanted}")):
            problems.append(f"{what} policy must be {wanted}, got {getattr(kind, '__name__', kind)}")
    plain = (dict, str, int, float, bool, type(None))
    for kwarg, rule in input_policy_rules(code).items():
        if is_constant(rule):
            if not isinstance(rule_value(rule), plain) or getattr(rule, "klass", None) not in (
                    None, *plain):
                problems.append(f"constant {kwarg} must be plain data")
        elif not isinstance(rule, (resolve("syft.service.policy.policy:Matches"),
                                   resolve("syft.types.uid:UID"))):
            problems.append(f"input {kwarg} must be bound to one object ({type(rule).__name__})")
    return problems


def rule_value(rule: Any) -> Any:
    """The UID or constant value an input-policy rule holds."""
    return getattr(rule, "val", rule)


def asset_ids_in_call(message: Any) -> set[str]:
    """Ids of the objects a code submission binds (any argument with input-policy kwargs)."""
    ids: set[str] = set()
    for value in list(message.args) + list(message.kwargs.values()):
        ids.update(str(rule_value(rule)) for rule in input_policy_rules(value).values())
    return ids


def nested_codes(code: Any) -> dict:
    """The other syft functions a UserCode launches (approving it approves them)."""
    return getattr(code, "nested_codes", None) or {}


# --------------------------------------------------------------------------- server side

@requires("syft.client.api:SyftAPIData", "syft.service.response:SyftError",
          "syft.serde.serialize:_serialize")
def signed_syft_error(worker: Any, message: str) -> bytes:
    """The body syft's API route answers an error with: a SyftError signed by the server,
    which a stock client shows as the message."""
    error = resolve("syft.service.response:SyftError")(message=message)
    signed = resolve("syft.client.api:SyftAPIData")(data=error).sign(worker.signing_key)
    return resolve("syft.serde.serialize:_serialize")(signed, to_bytes=True)


@requires("syft.serde.deserialize:_deserialize", "syft.client.api:SignedSyftAPICall")
def signed_api_call(body: bytes) -> Any | None:
    """The SignedSyftAPICall in an /api/v2/api_call body, or None when it is not one."""
    try:
        call = resolve("syft.serde.deserialize:_deserialize")(body, from_bytes=True)
    except Exception:  # any malformed body
        return None
    return call if isinstance(call, resolve("syft.client.api:SignedSyftAPICall")) else None


@requires("syft.server.credentials:SyftVerifyKey.from_string")
def verify_key_from_string(text: str) -> Any:
    return resolve("syft.server.credentials:SyftVerifyKey").from_string(text)


@requires("syft.service.user.user_stash:UserStash.get_by_email")
def user_by_email(worker: Any, email: str) -> Any | None:
    """The syft user with this email, read with the server's own credentials."""
    try:
        return worker.services.user.stash.get_by_email(worker.verify_key, email).unwrap()
    except Exception:  # syft raises NotFoundException subclasses
        return None


@requires("syft.service.user.user_stash:UserStash.get_by_verify_key")
def user_by_verify_key(worker: Any, verify_key: Any) -> Any | None:
    try:
        return worker.services.user.stash.get_by_verify_key(worker.verify_key, verify_key).unwrap()
    except Exception:
        return None


def email_of(worker: Any, verify_key: Any) -> str:
    """The email of the user with this verify key ('unknown' when there is none)."""
    user = user_by_verify_key(worker, verify_key)
    return user.email if user is not None else "unknown"


@requires("syft.service.request.request_stash:RequestStash")
def request_exists(worker: Any, request_id: str) -> bool:
    """Is there a request with this id (32 hex digits) on the server?"""
    try:
        worker.services.request.stash.get_by_uid(worker.verify_key, to_uid(request_id)).unwrap()
    except Exception:  # NotFound, or not a UID
        return False
    return True


@requires("syft.service.action.action_permissions:ActionObjectREAD",
          "syft.store.db.stash:ObjectStash.has_permission")
def can_read_object(worker: Any, object_id: str, verify_key: Any) -> bool:
    """May the account of `verify_key` read the action object `object_id` (its own upload,
    say)? syft runs an approved request's inputs with the server's rights, whoever
    submitted it, so the domain asks this before it approves."""
    read = resolve("syft.service.action.action_permissions:ActionObjectREAD")
    try:
        return bool(worker.services.action.stash.has_permission(
            read(uid=to_uid(object_id), credentials=verify_key)))
    except Exception:  # not a UID, or no such object
        return False


@requires("syft.service.request.request:Request.code_id",
          "syft.service.code.user_code_stash:UserCodeStash")
def request_code(worker: Any, request_id: str) -> Any | None:
    """The UserCode of the request `request_id` (32 hex digits), or None."""
    try:
        request = worker.services.request.stash.get_by_uid(worker.verify_key,
                                                           to_uid(request_id)).unwrap()
        return worker.services.user_code.stash.get_by_uid(worker.verify_key,
                                                          request.code_id).unwrap()
    except Exception:  # no such request, or not a code request
        return None


def code_constants(code: Any) -> dict:
    """The constants a request's code was submitted (and approved) with, by keyword."""
    return {kwarg: rule_value(rule) for kwarg, rule in input_policy_rules(code).items()
            if is_constant(rule)}


@requires("syft.service.notification.notifications:Notification.linked_obj",
          "syft.service.notification.notification_stash:NotificationStash")
def request_reason(worker: Any, request_id: str) -> str:
    """The reason its requester gave for the request `request_id` (syft sends it to the
    admin as the subject of the request's notification), or ''."""
    try:
        wanted = to_uid(request_id)
        notifications = worker.services.notification.stash.get_all(worker.verify_key).unwrap()
    except Exception:  # not a UID, or the store is unreadable
        return ""
    for notification in notifications:
        linked = notification.linked_obj
        if linked is not None and linked.object_uid == wanted:
            return str(notification.subject)
    return ""


@requires("syft.service.policy.policy:retrieve_from_db",
          "syft.service.context:AuthedServiceContext",
          "syft.service.action.action_service:filter_twin_kwargs",
          "syft.service.action.action_object:TwinMode")
def code_inputs(worker: Any, code: Any) -> dict:
    """{kwarg: value} of a UserCode as syft itself hands them to an approved run: assets
    read with the server's own credentials (their private data), constants as values."""
    retrieve = resolve("syft.service.policy.policy:retrieve_from_db")
    private = resolve("syft.service.action.action_object:TwinMode").PRIVATE
    unwrap = resolve("syft.service.action.action_service:filter_twin_kwargs")
    context = resolve("syft.service.context:AuthedServiceContext")(
        server=worker, credentials=worker.verify_key)
    rules = input_policy_rules(code)
    values = {kwarg: rule_value(rule) for kwarg, rule in rules.items() if is_constant(rule)}
    assets = {kwarg: rule_value(rule) for kwarg, rule in rules.items() if not is_constant(rule)}
    values.update(unwrap(retrieve(assets, context).unwrap(), twin_mode=private,
                         allow_python_types=True).unwrap())
    return values


@requires("syft.service.request.request_stash:RequestStash")
def request_of(worker: Any, request_id: str) -> Any | None:
    """The request `request_id` (32 hex digits), read with the server's credentials, or None."""
    try:
        return worker.services.request.stash.get_by_uid(worker.verify_key,
                                                        to_uid(request_id)).unwrap()
    except Exception:  # no such request
        return None


@requires("syft.service.request.request_stash:RequestStash")
def all_requests(worker: Any) -> list:
    """Every request of the server, read with the server's own credentials (one scan)."""
    return list(worker.services.request.stash.get_all(worker.verify_key).unwrap())


@requires("syft.store.blob_storage:BlobStorageEntry")
def blob_entries(worker: Any) -> list:
    """Every blob entry syft knows (on-disk blob storage: one file each)."""
    return list(worker.services.blob_storage.stash.get_all(worker.verify_key).unwrap())


@requires("syft.service.action.action_object:ActionObject.syft_blob_storage_entry_id",
          "syft.types.twin_object:TwinObject.private_obj")
def referenced_blob_ids(worker: Any) -> set:
    """The ids of the blob entries a stored object refers to (a twin's private and mock
    parts count)."""
    referenced = set()
    for obj in worker.services.action.stash.get_all(worker.verify_key).unwrap():
        for part in (obj, getattr(obj, "private_obj", None), getattr(obj, "mock_obj", None)):
            entry_id = getattr(part, "syft_blob_storage_entry_id", None)
            if entry_id is not None:
                referenced.add(entry_id)
    return referenced


def blob_file_name(entry: Any) -> str:
    """The name of a blob entry's file in the blob directory."""
    return os.path.basename(str(entry.location.path))


def delete_blob_entry(worker: Any, entry: Any, blob_dir: str | os.PathLike) -> None:
    """Remove a blob entry from syft's store and its file from `blob_dir`."""
    worker.services.blob_storage.stash.delete_by_uid(worker.verify_key, entry.id).unwrap()
    try:
        os.unlink(os.path.join(blob_dir, blob_file_name(entry)))
    except FileNotFoundError:
        pass


@requires("syft.service.dataset.dataset_stash:DatasetStash")
def all_datasets(worker: Any) -> list:
    """Every dataset of the server, read with the server's own credentials."""
    return list(worker.services.dataset.stash.get_all(worker.verify_key).unwrap())


@requires("syft.service.user.user_roles:ServiceRole")
def service_role(role: str) -> Any:
    """syft's ServiceRole for one of our role names (data_scientist, data_owner, admin)."""
    return resolve("syft.service.user.user_roles:ServiceRole")[role.upper()]


def role_of(user: Any) -> str:
    """Our role name of a syft user ('guest' for roles we do not grant)."""
    name = str(getattr(user.role, "name", "")).lower()
    return name if name in ("data_scientist", "data_owner", "admin") else "guest"


@requires("syft.server.datasite:Datasite", "syft.server.credentials:SyftSigningKey",
          "syft.store.blob_storage.on_disk:OnDiskBlobStorageConfig",
          "syft.store.blob_storage.on_disk:OnDiskBlobStorageClientConfig",
          "syft.store.db.sqlite:SQLiteDBConfig", "syft.store.db.postgres:PostgresDBConfig")
def build_datasite(*, name: str, server_id: str, signing_key_hex: str, sqlite_dir: Any,
                   postgres: dict | None, blob_dir: Any, root_email: str, root_name: str,
                   root_password: str) -> Any:
    """A syft Datasite with a fixed identity, its database and an on-disk blob store."""
    from nacl.signing import SigningKey

    if postgres:
        db_config = resolve("syft.store.db.postgres:PostgresDBConfig")(**postgres)
    else:
        db_config = resolve("syft.store.db.sqlite:SQLiteDBConfig")(filename="domain.sqlite",
                                                                  path=sqlite_dir)
    blob_module = "syft.store.blob_storage.on_disk"
    blob_config = resolve(f"{blob_module}:OnDiskBlobStorageConfig")(
        client_config=resolve(f"{blob_module}:OnDiskBlobStorageClientConfig")(
            base_directory=blob_dir),
        min_blob_size=0)
    signing_key = resolve("syft.server.credentials:SyftSigningKey")(
        signing_key=SigningKey(bytes.fromhex(signing_key_hex)))
    return resolve("syft.server.datasite:Datasite")(
        name=name, id=to_uid(server_id), signing_key=signing_key, db_config=db_config,
        blob_storage_config=blob_config, root_email=root_email, root_username=root_name,
        root_password=root_password, deployment_type="remote", reset=False, dev_mode=False,
        in_memory_workers=True, n_consumers=0, create_producer=False)


SQLITE_BUSY_TIMEOUT_MS = 60_000


def wait_for_sqlite_locks(worker: Any, milliseconds: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    """syft 0.9.5 sets SQLite's busy timeout (5 s) on one connection of its pool only; under
    twenty researchers at once, writes on the others failed with "database is locked"
    (an approval: "Could not get notifications!!"). Every connection waits up to
    `milliseconds` for a lock instead. Nothing for PostgreSQL."""
    engine = worker.db.engine
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        connection.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections reopen with it


@requires("syft.server.routes:make_routes")
def syft_routes(worker: Any) -> Any:
    """syft's own HTTP routes (login, api, api_call, ...) for `worker`."""
    return resolve("syft.server.routes:make_routes")(worker=worker)


def replace(target: str, replacement: Callable) -> Callable:
    """Replace the syft function named ``module:attr`` with `replacement`; returns the original.

    Used by the server's patches only; each patch lists its targets with ``@requires``."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    setattr(module, attr, replacement)
    return original


# --------------------------------------------------------------------------- client side

@requires("syft.types.server_url:ServerURL.from_url")
def keep_https_ports() -> None:
    """syft 0.9.5's ``ServerURL.from_url`` puts every https URL on port 443, and every
    request path goes through it (``with_path`` copies by ``from_url``): keep the port a
    URL names. (A stock client reaches HTTPS on port 443 only; README, "TLS".)"""
    from urllib.parse import urlparse

    server_url = resolve("syft.types.server_url:ServerURL")
    if getattr(server_url.from_url, "keeps_port", False):
        return
    original = server_url.from_url

    def from_url(cls: Any, url: Any) -> Any:
        result = original(url)
        if isinstance(url, str) and url.startswith("https://"):
            result.port = urlparse(url).port or 443
        return result

    from_url.keeps_port = True  # type: ignore[attr-defined]
    server_url.from_url = classmethod(from_url)


_api_registry_lock = threading.RLock()


@requires("syft.client.api:APIRegistry.set_api_for",
          "syft.client.api:APIRegistry.__api_registry__")
@contextlib.contextmanager
def acting_as(client: Any) -> Iterator[None]:
    """Within the block, syft resolves what `client`'s objects link to (a request's code,
    say) through `client`'s own API, and after it through none. syft keeps one API per
    (server, account) in a process-wide registry, the last login's: two logins of one
    account in one process (two console sessions of the same admin in the server) would
    otherwise call through each other's token, and a logged-out one's is revoked. Blocks
    run one at a time in the process."""
    registry = resolve("syft.client.api:APIRegistry")
    key = (client.id, client.credentials.verify_key)
    with _api_registry_lock:
        registry.set_api_for(server_uid=key[0], user_verify_key=key[1], api=client.api)
        try:
            yield
        finally:
            registry.__api_registry__.pop(key, None)


def forget_api(client: Any) -> None:
    """Take `client`'s API out of syft's process-wide registry (its login put it there)."""
    registry = resolve("syft.client.api:APIRegistry")
    with _api_registry_lock:
        registry.__api_registry__.pop((client.id, client.credentials.verify_key), None)


@requires("syft.client.client:HTTPConnection.make_call", "syft.client.client:_serialize",
          "syft.client.client:_deserialize")
def reuse_api_connections() -> None:
    """syft 0.9.5 sends every API call with a module-level ``requests.post``: a new TCP
    connection each time, and over HTTPS a new TLS handshake and SSL context (~35 ms here,
    bench/bench_tls.py). Send them on the connection's own session (kept alive), as its
    GETs already are; same request, same checks."""
    import requests

    connection_type = resolve("syft.client.client:HTTPConnection")
    if getattr(connection_type.make_call, "reuses_connections", False):
        return
    original = connection_type.make_call
    serialize = resolve("syft.client.client:_serialize")
    deserialize = resolve("syft.client.client:_deserialize")

    def make_call(self: Any, signed_call: Any) -> Any:
        if self.rtunnel_token:
            return original(self, signed_call)
        response = self.session.post(url=str(self.api_url), headers=self.headers,
                                     data=serialize(obj=signed_call, to_bytes=True))
        if response.status_code != 200:
            raise requests.ConnectionError(f"Failed to fetch metadata. Response returned with "
                                           f"code {response.status_code}")
        return deserialize(response.content, from_bytes=True)

    make_call.reuses_connections = True  # type: ignore[attr-defined]
    connection_type.make_call = make_call


_tokens_by_account: dict[tuple[str, str], str] = {}


@requires("syft.service.network.server_peer:route_to_connection",
          "syft.service.network.server_peer:ServerPeer.client_with_key",
          "syft.service.network.server_peer:ServerPeer.pick_highest_priority_route",
          "syft.client.client:HTTPConnection", "syft.types.result:as_result",
          "syft.types.errors:SyftException")
def carry_token_to(url: str, token: str, verify_key: Any) -> None:
    """Clients this process's syft builds from a peer's route (a project's leader, say)
    carry the token of the account they act for, as the client that account logged in
    with does."""
    _tokens_by_account[(url.rstrip("/"), str(verify_key))] = token
    module = importlib.import_module("syft.service.network.server_peer")
    if getattr(module.ServerPeer.client_with_key, "carries_tokens", False):
        return
    http_connection = resolve("syft.client.client:HTTPConnection")
    as_result = resolve("syft.types.result:as_result")

    @as_result(resolve("syft.types.errors:SyftException"))
    def client_with_key(self: Any, credentials: Any) -> Any:
        # syft's own body, with the account's token on the connection before its first call
        if not self.server_routes:
            raise resolve("syft.types.errors:SyftException")(
                public_message=f"No routes to peer: {self}")
        connection = module.route_to_connection(route=self.pick_highest_priority_route())
        if isinstance(connection, http_connection):
            account_token = _tokens_by_account.get(
                (str(connection.url).rstrip("/"), str(credentials.verify_key)))
            if account_token:
                connection.headers = {**(connection.headers or {}),
                                      "Authorization": f"Bearer {account_token}"}
        client_type = connection.get_client_type().unwrap()
        return client_type(connection=connection, credentials=credentials)

    client_with_key.carries_tokens = True  # type: ignore[attr-defined]
    module.ServerPeer.client_with_key = client_with_key


class _ThreadMutingStdout:
    """sys.stdout stand-in that drops writes from threads inside `muted()`."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> int:
        return len(text) if _muting.depth else self.stream.write(text)

    def flush(self) -> None:
        if not _muting.depth:
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _Muting(threading.local):
    depth = 0


_muting = _Muting()
_install_lock = threading.Lock()


def _muted_display(original: Callable) -> Callable:
    def display(*objects: Any, **kwargs: Any) -> Any:
        return None if _muting.depth else original(*objects, **kwargs)
    display.mutes_syft = True  # type: ignore[attr-defined]
    return display


@requires("syft.service.code.user_code:display")
def _install_muting() -> None:
    with _install_lock:
        if not isinstance(sys.stdout, _ThreadMutingStdout):
            sys.stdout = _ThreadMutingStdout(sys.stdout)
        user_code = importlib.import_module("syft.service.code.user_code")
        if not getattr(user_code.display, "mutes_syft", False):
            user_code.display = _muted_display(user_code.display)


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Silence syft's prints and IPython displays made by this thread, and only this one.

    Other threads keep printing: stdout is wrapped once by a stream that drops only
    the writes of threads inside `muted()`, so overlapping uses from several threads
    never restore each other's streams.

        with muted():
            client.code.request_code_execution(function, reason="...")
    """
    _install_muting()
    _muting.depth += 1
    try:
        yield
    finally:
        _muting.depth -= 1
