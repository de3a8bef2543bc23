# API authorization: may this caller do this action on this tenant's data? (api/authz.py)
#
# input:
#   principal.tenant_id  the caller's tenant (JWT claim "tenant_id", or the API key's tenant)
#   principal.scopes     the caller's scopes (array of strings)
#   action               "read" | "write" | "platform"
#   tenant_id            the tenant the operation names (its tenantId argument; "" for platform)
#
# "platform" (the dashboards' rollup over every tenant, /dashboard) names no tenant: allowed iff
# the caller holds platform:read (an operator's scope, never a tenant's), else SCOPE_MISSING.
#
# Result: data.igflow.graphql.decision = {"allow": bool, "reason": code or ""}. Otherwise allowed iff the
# caller's tenant is the named tenant (and not blank) and the caller holds the action's scope:
# read needs coherence:read, write needs coherence:write; an action not listed here needs a scope
# nobody holds. A denial carries exactly one reason, checked in this order:
#   TENANT_FORBIDDEN  another tenant's data (reported even when the scope is missing too: the
#                     caller learns nothing about what it could do elsewhere)
#   SCOPE_MISSING     the caller's own tenant, without the action's scope
package igflow.graphql

import rego.v1

required_scope := {"read": "coherence:read", "write": "coherence:write", "platform": "platform:read"}

own_tenant if {
	input.principal.tenant_id != ""
	input.principal.tenant_id == input.tenant_id
}

has_scope if required_scope[input.action] in input.principal.scopes

reason := "SCOPE_MISSING" if {
	input.action == "platform"
	not has_scope
}
else := "" if input.action == "platform"
else := "TENANT_FORBIDDEN" if not own_tenant
else := "SCOPE_MISSING" if not has_scope
else := ""

decision := {"allow": reason == "", "reason": reason}
