"""The master's ACLs for framework principals: which roles each may subscribe with and which OS users
its tasks may run as (Mesos' ``register_frameworks`` / ``run_tasks``). Deny by default: a framework
principal nobody configured may use role ``*`` and the agents' default task user only.

A mixin of ``MasterState`` (``core.master``); operators change it with SET_ACL (``bmesos admin acl``),
and it is kept in the registry across failovers.
"""

from __future__ import annotations

from broker_mesos.core import protocol, security
from broker_mesos.core.codec import USER_PATTERN
from broker_mesos.core.errors import CallRefused
from broker_mesos.core.master_model import FrameworkRecord
from broker_mesos.core.security import Denied, FrameworkAcl, Principal

DEFAULT_ACL = FrameworkAcl()


class AclRules:
    """ACL decisions; the state they read is ``MasterState``'s."""

    acls: dict[str, FrameworkAcl]
    frameworks: dict[str, FrameworkRecord]

    def acl_of(self, who: Principal) -> FrameworkAcl:
        return self.acls.get(who.user, DEFAULT_ACL)

    def acl_check_subscribe(self, who: Principal | None, call: protocol.Subscribe) -> Denied | None:
        """The role and the default task user a framework principal subscribes with."""
        if who is None:
            return Denied("SUBSCRIBE from a user that is no principal of this cluster")
        acl = self.acl_of(who)
        return security.check_role(acl, call.role, who) or security.check_user(acl, call.user, who)

    def acl_check_accept(self, who: Principal | None, call: protocol.Accept) -> Denied | None:
        """Every task's OS user (its own, else its framework's) must be one the principal may use."""
        if who is None:
            return Denied("ACCEPT from a user that is no principal of this cluster")
        framework = self.frameworks.get(call.framework_id)
        default = framework.user if framework is not None else ""
        acl = self.acl_of(who)
        for task in call.tasks:
            denied = security.check_user(acl, task.user or default, who)
            if denied is not None:
                return Denied(f"task {task.task_id}: {denied.reason}")
        return None

    def set_acl(self, call: protocol.SetAcl) -> tuple[protocol.Acls, list[tuple[str, dict[str, object]]]]:
        """Replace one framework principal's ACL; refused (nothing changed) if it names bad things."""
        who = security.parse(call.principal)
        if who is None or who.kind is not security.Kind.FRAMEWORK:
            raise CallRefused(f"{call.principal!r} is not a framework principal (framework.<name>)")
        bad = [u for u in call.users if u != "*" and not USER_PATTERN.fullmatch(u)]
        if bad:
            raise CallRefused(f"not user names: {bad[:5]}")
        self.acls[who.user] = FrameworkAcl(frozenset(call.roles or ["*"]), frozenset(call.users))
        return self.acls_info(), [("acl.changed", {"principal": who.user, "roles": sorted(call.roles or ["*"]),
                                                   "users": sorted(call.users)})]

    def acls_info(self) -> protocol.Acls:
        return protocol.Acls([protocol.AclInfo(user, sorted(acl.roles), sorted(acl.users))
                              for user, acl in sorted(self.acls.items())])
