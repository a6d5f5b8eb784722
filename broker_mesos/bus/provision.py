"""Provisioning a cluster's principals on RabbitMQ (``bmesos principals``): users, their permissions and
limits, the vhost and its shared topology, all as ``core.security`` says.

Users, permissions, topic permissions and limits go through RabbitMQ's **HTTP management API**
(``rabbitmq_management``, which the ``rabbitmq:3-management`` image runs), with the standard library's
``urllib`` only. Not ``rabbitmqctl``: that needs the node's Erlang cookie (which is root on the broker:
it runs arbitrary code on the Erlang node) and the distribution port, so it only works on or next to
the broker. The HTTP API works remotely, from an init container, a CI job or an operator's machine,
with an administrator's user name and password, over HTTPS if the broker serves it.

The shared topology (``topology.EXCHANGES``, ``topology.base_queues()``, the master's registry queue,
with their arguments and bindings) is declared over AMQP as the master user: only the master may
configure it; every other principal declares it passively, which needs no permission.

API calls (RabbitMQ 3.10; ``{v}`` the vhost, ``{u}`` a user, both percent-encoded)::

    GET    /api/overview, /api/whoami             reachable? credentials good? an administrator?
    GET    /api/vhosts/{v}, PUT /api/vhosts/{v}   create the vhost (if missing)
    DELETE /api/permissions/{v}/{admin}           revoke what creating the vhost granted the admin user
    PUT    /api/vhost-limits/{v}/max-queues       {"value": MAX_QUEUES}
    GET    /api/users/{u}                         exists? (its tags, password hash)
    GET    /api/users/{u}/permissions             which vhosts it reaches (names are broker-wide)
    PUT    /api/users/{u}                         {"password" | "password_hash", "tags"} (a PUT without
                                                  either clears the password: tags are changed with the hash)
    DELETE /api/users/{u}                         (3.10 also closes the user's connections itself)
    PUT    /api/topic-permissions/{v}/{u}         {"exchange", "write", "read"}, one per topic exchange
    DELETE /api/topic-permissions/{v}/{u}         (only when a stale exchange must go: it clears all)
    PUT    /api/permissions/{v}/{u}               {"configure", "write", "read"}   (init: every principal)
    PUT    /api/user-limits/{u}/max-connections   {"value": N}   (and max-channels; exists in 3.10)
    DELETE /api/connections/username/{u}          close every connection of a user (X-Reason header)
    GET    /api/users, /api/vhosts/{v}/permissions, /api/vhosts/{v}/topic-permissions   (list)
    GET    /api/exchanges/{v}, /api/queues/{v}, /api/bindings/{v}   (verify the topology)

Limits (constants below): the vhost holds at most ``MAX_QUEUES`` queues (every framework has two, every
agent one, every monitor, operator command and framework driver a few server-named ones); each
principal has at most ``USER_LIMITS[kind]`` connections and channels (one ``Bus`` is one connection
with one channel plus short-lived side channels; the headroom covers a reconnect overlapping the old
connection, and a principal shared by a few processes). The master has none: its standbys share it.

Principal names are broker-wide (RabbitMQ users are not per vhost): a user that already reaches
another vhost is refused, so two clusters on one broker cannot share, or take over, a principal.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from broker_mesos.bus import topology
from broker_mesos.bus.tls import TlsOptions, connection_parameters
from broker_mesos.core import security
from broker_mesos.core.codec import ROLE_PATTERN
from broker_mesos.core.errors import BrokerUnreachable, BusError
from broker_mesos.core.security import Kind, Principal

DEFAULT_ADMIN_URL = "http://guest:guest@127.0.0.1:15672"
DEFAULT_VHOST = "bmesos"
DEFAULT_AMQP_URL_BASE = "amqp://127.0.0.1:5672"
DEFAULT_OPERATOR = "admin"
API_TIMEOUT = 15.0
PASSWORD_BYTES = 32  # secrets.token_urlsafe(32): 43 URL-safe characters, 256 bits

MAX_QUEUES = 10_000
# kind -> (max-connections, max-channels)
USER_LIMITS: dict[Kind, tuple[int, int]] = {
    Kind.AGENT: (4, 64),
    Kind.FRAMEWORK: (8, 256),
    Kind.OPERATOR: (8, 64),
    Kind.MONITOR: (8, 64),
}

# a framework principal's roles (``--roles``), one user tag each: RabbitMQ splits tags on commas
ROLE_TAG = "bmesos-role:"


class ManagementError(BusError):
    """The management API answered with an error (``status``: the HTTP status)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def role_tags(roles: Iterable[str]) -> list[str]:
    return [ROLE_TAG + role for role in roles]


def roles_from_tags(tags: Iterable[str] | str) -> tuple[str, ...]:
    """The roles recorded on a user (its tags, as ``GET /api/users/{u}`` gives them: a list, or a
    comma-separated string before RabbitMQ 3.9)."""
    if isinstance(tags, str):
        tags = tags.split(",")
    return tuple(sorted(t[len(ROLE_TAG):] for t in tags if t.startswith(ROLE_TAG)))


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    roles = tuple(dict.fromkeys(r.strip() for r in roles if r.strip()))
    for role in roles:
        if not ROLE_PATTERN.fullmatch(role):
            raise ValueError(f"role {role!r} is not a role name ('*', or 1-128 of A-Z a-z 0-9 _ . -)")
    return roles


# -- the HTTP management API ------------------------------------------------------------------------


class ManagementApi:
    """A thin client of RabbitMQ's HTTP API: ``http(s)://user:password@host:port[/prefix]``."""

    def __init__(self, url: str, timeout: float = API_TIMEOUT, cafile: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BusError(f"the admin URL must be http(s)://user:password@host:port, not {redact(url)}")
        self.user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port is not None else "")
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        self.timeout = timeout
        # https: the API's certificate is verified (against ``cafile``, else the system's CAs)
        self._context = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
        self._auth = "Basic " + base64.b64encode(f"{self.user}:{password}".encode()).decode()

    def request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False,
                headers: dict[str, str] | None = None) -> Any:
        """``method`` on ``/api/<path>``; the decoded JSON answer (None when empty, or when 404 and
        ``missing_ok``)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}/api/{path}", data=data, method=method, headers={
            "Authorization": self._auth, "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            raise self._refusal(method, path, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, socket.timeout | TimeoutError):
                reason = f"no answer within {self.timeout:g}s"
            elif isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror.lower()
            raise BrokerUnreachable(f"cannot reach the RabbitMQ management API at {self.base}: {reason}") from None
        return json.loads(raw) if raw.strip() else None

    def _refusal(self, method: str, path: str, exc: urllib.error.HTTPError) -> ManagementError:
        try:
            detail = json.loads(exc.read() or b"{}")
            reason = str(detail.get("reason") or detail.get("error") or exc.reason)
        except (ValueError, OSError, AttributeError):
            reason = str(exc.reason)
        if exc.code == 401 and "login failed" in reason.lower():
            return ManagementError(f"the management API at {self.base} refused the admin credentials of user "
                                   f"{self.user!r} (check --admin-url or $BMESOS_ADMIN_URL)", exc.code)
        if exc.code == 401 and path == "overview":
            return ManagementError(f"user {self.user!r} may not use the management API at {self.base}: {reason} "
                                   "(it needs the administrator tag)", exc.code)
        if exc.code in (401, 403):
            return ManagementError(f"user {self.user!r} may not {method} /api/{_unquote(path)}: {reason} "
                                   "(it needs the administrator tag)", exc.code)
        return ManagementError(f"the management API refused {method} /api/{_unquote(path)}: "
                               f"{exc.code} {reason}", exc.code)

    def check(self) -> dict[str, Any]:
        """Reachable, our credentials good, and an administrator's; the overview (``rabbitmq_version``)."""
        overview = self.request("GET", "overview")
        whoami = self.request("GET", "whoami")
        tags = whoami.get("tags") or []
        if isinstance(tags, str):
            tags = tags.split(",")
        if "administrator" not in tags:
            raise ManagementError(f"user {self.user!r} is not an administrator of the broker (its tags: "
                                  f"{', '.join(tags) or 'none'}); provisioning needs one", 403)
        return dict(overview)


def _q(*parts: str) -> str:
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)


def _unquote(path: str) -> str:
    return urllib.parse.unquote(path)


def redact(url: str) -> str:
    """``url`` without its password."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable URL>"


# -- what gets issued ---------------------------------------------------------------------------------


def amqp_url(base: str, user: str, password: str, vhost: str) -> str:
    """``base`` (``amqp[s]://host:port[?query]``) with ``user``, ``password`` and ``vhost`` in it."""
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError(f"the AMQP URL base must be amqp[s]://host[:port], not {redact(base)}")
    host = parts.netloc.rpartition("@")[2]
    creds = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    return urllib.parse.urlunsplit((parts.scheme, f"{creds}@{host}", "/" + urllib.parse.quote(vhost, safe=""),
                                    parts.query, ""))


def url_user(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).username or "")


@dataclass(slots=True)
class Issued:
    """One principal's credential after a command: ``url`` carries the password, None when the user
    existed and its password was kept (and is not known here)."""

    user: str
    status: str  # created | kept | rotated
    url: str | None
    roles: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PrincipalInfo:
    user: str
    principal: Principal | None  # None: a user with access to the vhost that is no principal of ours
    permissions: dict[str, str]
    topic: dict[str, tuple[str, str]]
    roles: tuple[str, ...]
    limits: dict[str, int]
    as_provisioned: bool  # permissions and topic permissions are exactly security.permissions()


def write_url_file(directory: str | os.PathLike[str], user: str, url: str) -> Path:
    """``directory/<user>.url``, mode 0600 from its first byte (atomically replaced)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{user}.url"
    tmp = directory / f".{user}.url.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (url + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_url_file(directory: str | os.PathLike[str] | None, user: str) -> str | None:
    if directory is None:
        return None
    path = Path(directory) / f"{user}.url"
    try:
        url = path.read_text().strip()
    except FileNotFoundError:
        return None
    return url if url_user(url) == user else None


# -- AMQP: the topology, declared as a principal ----------------------------------------------------


def _connect(url: str, timeout: float, tls: TlsOptions | None = None) -> pika.BlockingConnection:
    params = connection_parameters(url, tls)  # amqps://: the broker's certificate verified
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    user = params.credentials.username  # type: ignore[attr-defined]
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.ProbableAuthenticationError:
        raise BusError(f"the broker refused user {user}'s password") from None
    except pika.exceptions.ProbableAccessDeniedError:
        raise BusError(f"user {user} may not open vhost {params.virtual_host}") from None
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnreachable(f"cannot connect to the broker at {redact(url)}: {_describe(exc)}") from None


def _describe(error: BaseException) -> str:
    """pika wraps the cause (refused, timed out) in exceptions that print empty."""
    inner = [getattr(error, "exception", None), *(getattr(error, "exceptions", None) or error.args)]
    for cause in reversed(inner):
        if isinstance(cause, BaseException):
            return _describe(cause)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    text = str(error).strip()
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__


def declare(url: str, exchanges: Iterable[topology.Exchange], queues: Iterable[topology.Queue],
            timeout: float = API_TIMEOUT, tls: TlsOptions | None = None) -> None:
    """Declare ``exchanges`` and ``queues`` (with their arguments and bindings) as ``url``'s user."""
    connection = _connect(url, timeout, tls)
    what = "?"
    try:
        channel = connection.channel()
        for ex in exchanges:
            what = f"exchange {ex.name}"
            channel.exchange_declare(ex.name, ex.type, durable=ex.durable)
        for q in queues:
            what = f"queue {q.name}"
            channel.queue_declare(q.name, durable=q.durable, exclusive=q.exclusive, auto_delete=q.auto_delete,
                                  arguments=q.arguments or None)
            for exchange, key in q.bindings:
                what = f"binding of queue {q.name} to {exchange} with key {key}"
                channel.queue_bind(q.name, exchange, routing_key=key)
    except pika.exceptions.ChannelClosedByBroker as exc:
        hint = " (it exists with other arguments: delete it, or keep the old ones)" if exc.reply_code == 406 else ""
        raise BusError(f"the broker refused the {what}: {exc.reply_code} {exc.reply_text}{hint}") from None
    except pika.exceptions.AMQPError as exc:
        raise BusError(f"lost the broker while declaring the {what}: {exc.__class__.__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def shared_topology() -> tuple[tuple[topology.Exchange, ...], tuple[topology.Queue, ...]]:
    """What ``init`` declares: every exchange, every process's base queues and the master's registry."""
    return topology.EXCHANGES, (*topology.base_queues(), topology.master_registry_queue())


# -- the provisioner -------------------------------------------------------------------------------


class Provisioner:
    """The principals of one cluster (``vhost``) on one broker."""

    def __init__(self, api: ManagementApi, vhost: str = DEFAULT_VHOST, amqp_base: str = DEFAULT_AMQP_URL_BASE,
                 master_user: str = security.DEFAULT_MASTER_PRINCIPAL, tls: TlsOptions | None = None) -> None:
        self.api = api
        self.tls = tls
        self.vhost = vhost
        self.amqp_base = amqp_base
        self.master_user = master_user
        amqp_url(amqp_base, "x", "x", vhost)  # fail early on a bad base

    def url(self, user: str, password: str) -> str:
        return amqp_url(self.amqp_base, user, password, self.vhost)

    def principal(self, kind: Kind | str, name: str) -> Principal:
        kind = Kind(kind)
        if kind is Kind.MASTER:
            raise ValueError("the master principal is made by `init`")
        who = security.principal(kind, name)
        if who.user == self.master_user:
            raise ValueError(f"{who.user} is this cluster's master principal")
        return who

    # -- users
    def get_user(self, user: str) -> dict[str, Any] | None:
        found = self.api.request("GET", f"users/{_q(user)}", missing_ok=True)
        return dict(found) if found is not None else None

    def _other_vhosts(self, user: str) -> list[str]:
        perms = self.api.request("GET", f"users/{_q(user)}/permissions", missing_ok=True) or []
        return sorted({p["vhost"] for p in perms if p.get("vhost") != self.vhost})

    def _refuse_foreign(self, user: str) -> None:
        others = self._other_vhosts(user)
        if others:
            raise BusError(f"user {user} already exists and reaches vhost(s) {', '.join(others)}: RabbitMQ user "
                           "names are broker-wide, so this cluster needs another name for it")

    def _put_user(self, user: str, tags: list[str], password: str | None, existing: dict[str, Any] | None) -> None:
        body: dict[str, Any] = {"tags": ",".join(tags)}
        if password is not None:
            body["password"] = password
        else:  # a PUT without a password would clear it: keep the hash
            assert existing is not None
            body["password_hash"] = existing.get("password_hash", "")
            body["hashing_algorithm"] = existing.get("hashing_algorithm", "rabbit_password_hashing_sha256")
        self.api.request("PUT", f"users/{_q(user)}", body)

    def _grant(self, who: Principal) -> list[str]:
        """Topic permissions, then permissions (a user without permissions cannot open the vhost, so it
        is never without its topic fences), then limits. Warnings (limits the broker lacks) returned."""
        perms = security.permissions(who)
        current = self.api.request("GET", f"topic-permissions/{_q(self.vhost, who.user)}", missing_ok=True) or []
        if {t["exchange"] for t in current} - set(perms.topic):
            self.api.request("DELETE", f"topic-permissions/{_q(self.vhost, who.user)}")
        for exchange, (write, read) in sorted(perms.topic.items()):
            self.api.request("PUT", f"topic-permissions/{_q(self.vhost, who.user)}",
                             {"exchange": exchange, "write": write, "read": read})
        self.api.request("PUT", f"permissions/{_q(self.vhost, who.user)}",
                         {"configure": perms.configure, "write": perms.write, "read": perms.read})
        warnings: list[str] = []
        limits = USER_LIMITS.get(who.kind)
        if limits is not None:
            for name, value in zip(("max-connections", "max-channels"), limits, strict=True):
                try:
                    self.api.request("PUT", f"user-limits/{_q(who.user, name)}", {"value": value})
                except ManagementError as exc:  # e.g. the user_limits feature flag is off (upgraded cluster)
                    if exc.status in (401, 403):
                        raise
                    warnings.append(f"{who.user}: no {name} limit set ({exc})")
        return warnings

    def _issue(self, who: Principal, *, roles: tuple[str, ...] = (), rotate: bool = False,
               keep_existing: bool = False, known_url: str | None = None) -> Issued:
        """Create ``who``'s user with a new password and grant it; an existing user is refused, or
        with ``rotate`` given a new password, or with ``keep_existing`` kept as it is (re-granted)."""
        existing = self.get_user(who.user)
        if existing is not None:
            self._refuse_foreign(who.user)
            if not rotate and not keep_existing:
                raise BusError(f"user {who.user} exists: `bmesos principals rotate {who.kind.value} {who.name}` "
                               "gives it a new password (or add --rotate)")
        tags = role_tags(roles)
        password = new_password() if existing is None or rotate else None
        self._put_user(who.user, tags, password, existing)
        warnings = self._grant(who)
        if password is not None:
            status = "created" if existing is None else "rotated"
            return Issued(who.user, status, self.url(who.user, password), roles, warnings)
        return Issued(who.user, "kept", known_url, roles, warnings)

    # -- commands
    def init(self, operator: str = DEFAULT_OPERATOR, *, rotate: bool = False,
             known: dict[str, str] | None = None) -> tuple[list[Issued], list[str]]:
        """The vhost, its limit, the master and one operator, the shared topology. Idempotent: users
        that exist keep their passwords (unless ``rotate``); ``known`` maps a user to its URL from an
        earlier run (its password is needed to declare the topology as the master). Every principal
        already in the vhost is granted again what ``security.permissions`` says (after an upgrade)."""
        known = known or {}
        self.api.check()
        notes: list[str] = []
        existed = self.api.request("GET", f"vhosts/{_q(self.vhost)}", missing_ok=True) is not None
        if not existed:
            self.api.request("PUT", f"vhosts/{_q(self.vhost)}", {"description": "broker-mesos cluster"})
            # the API grants the vhost's creator full permissions; the admin has no business in it
            if security.parse(self.api.user, self.master_user) is None:
                self.api.request("DELETE", f"permissions/{_q(self.vhost, self.api.user)}", missing_ok=True)
                notes.append(f"created vhost {self.vhost} (without permissions for {self.api.user})")
        self.api.request("PUT", f"vhost-limits/{_q(self.vhost, 'max-queues')}", {"value": MAX_QUEUES})
        master = Principal(Kind.MASTER, self.master_user)
        op = security.principal(Kind.OPERATOR, operator)
        issued = [self._issue(master, rotate=rotate, keep_existing=True, known_url=known.get(master.user)),
                  self._issue(op, rotate=rotate, keep_existing=True, known_url=known.get(op.user))]
        regranted = 0
        for user in self._vhost_users():  # what this version grants, to every principal already here
            who = security.parse(user, self.master_user)
            if who is not None and user not in (master.user, op.user):
                notes.extend(f"warning: {w}" for w in self._grant(who))
                regranted += 1
        if regranted:
            notes.append(f"granted {regranted} more principals what this version of core/security.py says")
        master_url = issued[0].url
        exchanges, queues = shared_topology()
        if master_url is not None:
            declare(master_url, exchanges, queues, self.api.timeout, self.tls)
            notes.append(f"declared {len(exchanges)} exchanges and {len(queues)} queues as {master.user}")
        missing = self.missing_topology()
        if missing:
            raise BusError(f"the topology of vhost {self.vhost} lacks {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''} and {master.user}'s password is not known here: "
                           "pass the --output-dir of the first init (it holds its URL), or --rotate")
        return issued, notes

    def add(self, kind: Kind | str, name: str, roles: Iterable[str] = (), *, rotate: bool = False) -> Issued:
        who = self.principal(kind, name)
        roles = check_roles(roles)
        if roles and who.kind is not Kind.FRAMEWORK:
            raise ValueError("--roles is for framework principals")
        if who.kind is Kind.FRAMEWORK:
            self._refuse_overlap(who)
        issued = self._issue(who, roles=roles, rotate=rotate)
        if who.kind is Kind.AGENT:
            assert issued.url is not None
            # the agent's queue, bound, before the agent first connects: tasks routed to it wait there.
            # Declared with the agent's own new credential (it may configure exactly this queue), so
            # the master's password never has to be on the operator's machine; this also proves the URL.
            try:
                declare(issued.url, (), (topology.agent_tasks_queue(who.name),), self.api.timeout, self.tls)
            except BusError:
                if issued.status == "created":  # all or nothing: no user whose URL nobody saw
                    self.api.request("DELETE", f"users/{_q(who.user)}", missing_ok=True)
                raise
        return issued

    def _refuse_overlap(self, who: Principal) -> None:
        """A framework principal owns ids ``<name>`` and ``<name>-*``: ``alice`` and ``alice-x`` would
        both own ``alice-x``, so a name that overlaps an existing principal's is refused."""
        for info in self._vhost_users():
            other = security.parse(info, self.master_user)
            if other is None or other.kind is not Kind.FRAMEWORK or other.name == who.name:
                continue
            if who.name.startswith(other.name + "-") or other.name.startswith(who.name + "-"):
                raise BusError(f"framework principal {who.name} would share framework ids with {other.user} "
                               f"(a principal owns <name> and <name>-*): choose a name that is not a prefix of, "
                               "nor prefixed by, another one's")

    def rotate(self, kind: Kind | str, name: str | None = None, *, close_connections: bool = False) -> Issued:
        """A new password for an existing principal (the master too: ``name`` None or its user name)."""
        if Kind(kind) is Kind.MASTER:
            if name not in (None, "", self.master_user):
                raise ValueError(f"this cluster's master principal is {self.master_user}, not {name}")
            who = Principal(Kind.MASTER, self.master_user)
        else:
            if not name:
                raise ValueError(f"which {Kind(kind).value}? give its NAME")
            who = self.principal(kind, name)
        existing = self.get_user(who.user)
        if existing is None or who.user not in self._vhost_users():
            raise BusError(f"no principal {who.user} in vhost {self.vhost}")
        self._refuse_foreign(who.user)
        password = new_password()
        tags = existing.get("tags") or []
        self._put_user(who.user, tags.split(",") if isinstance(tags, str) else list(tags), password, existing)
        if close_connections:
            self.close_connections(who.user, "credential rotated")
        return Issued(who.user, "rotated", self.url(who.user, password), roles_from_tags(tags))

    def remove(self, kind: Kind | str, name: str) -> None:
        who = self.principal(kind, name)
        if self.get_user(who.user) is None:
            raise BusError(f"no user {who.user}")
        self._refuse_foreign(who.user)
        self.api.request("DELETE", f"users/{_q(who.user)}")
        self.close_connections(who.user, "principal removed")

    def close_connections(self, user: str, reason: str) -> None:
        self.api.request("DELETE", f"connections/username/{_q(user)}", missing_ok=True,
                         headers={"X-Reason": reason})

    def _vhost_users(self) -> list[str]:
        return [p["user"] for p in self.api.request("GET", f"vhosts/{_q(self.vhost)}/permissions") or []]

    def list(self) -> list[PrincipalInfo]:
        """Every user that reaches the vhost, ours or not, with how its permissions compare."""
        if self.api.request("GET", f"vhosts/{_q(self.vhost)}", missing_ok=True) is None:
            raise BusError(f"no vhost {self.vhost} (run `bmesos principals init` first)")
        perms = self.api.request("GET", f"vhosts/{_q(self.vhost)}/permissions") or []
        topics: dict[str, dict[str, tuple[str, str]]] = {}
        for t in self.api.request("GET", f"vhosts/{_q(self.vhost)}/topic-permissions") or []:
            topics.setdefault(t["user"], {})[t["exchange"]] = (t["write"], t["read"])
        users = {u["name"]: u for u in self.api.request("GET", "users") or []}
        out = []
        for p in sorted(perms, key=lambda p: p["user"]):
            user = p["user"]
            who = security.parse(user, self.master_user)
            regexes = {k: p[k] for k in ("configure", "write", "read")}
            topic = topics.get(user, {})
            record = users.get(user, {})
            limits = record.get("limits") or {}
            expected = security.permissions(who) if who is not None else None
            same = expected is not None and regexes == {"configure": expected.configure, "write": expected.write,
                                                        "read": expected.read} and topic == expected.topic
            out.append(PrincipalInfo(user, who, regexes, topic, roles_from_tags(record.get("tags") or []),
                                     {k: int(v) for k, v in limits.items()}, same))
        return out

    def missing_topology(self) -> list[str]:
        """What of ``shared_topology()`` the vhost lacks (read through the API: an administrator sees
        every vhost without permissions in it)."""
        exchanges, queues = shared_topology()
        have_x = {(e["name"], e["type"]) for e in self.api.request("GET", f"exchanges/{_q(self.vhost)}") or []}
        have_q = {q["name"] for q in self.api.request("GET", f"queues/{_q(self.vhost)}") or []}
        have_b = {(b["source"], b["destination"], b["routing_key"])
                  for b in self.api.request("GET", f"bindings/{_q(self.vhost)}") or []
                  if b.get("destination_type") == "queue"}
        missing = [f"exchange {e.name}" for e in exchanges if (e.name, e.type) not in have_x]
        missing += [f"queue {q.name}" for q in queues if q.name not in have_q]
        missing += [f"binding {q.name}<-{ex}:{key}" for q in queues for ex, key in q.bindings
                    if (ex, q.name, key) not in have_b]
        return missing
