# Redaction: which fields of a tenant's signals are redacted, and how, before any store sees
# them (operators/redact.py, right after tenant-tag).
#
# input:
#   tenant_id   the tenant whose signals are being redacted
#
# data.redaction (policies/redaction.json):
#   tenants     {tenant_id: {field: rule, ...}}   a tenant the data does not name has no rules
#
# Rules:
#   drop   the field is emptied as the contract allows (selectors: the empty list)
#   mask   the shape is kept: every character becomes `*` except the last 4 (at most half of
#          them; a short value is masked whole)
#   hash   HMAC-SHA-256 (64 hex digits) of the value under the tenant's own key of scope
#          `redaction` (tenancy/keys.py): deterministic per tenant, different across tenants
#
# Which rule a field allows is the step's contract (operators/redact.py ALLOWED): keys that
# dedupe, the graph and Redis join on (signal_id, source) can only be hashed; tenant_id, value,
# weight and ts are never redacted (every key, partition and score depends on them). The loader
# refuses anything else at start-up, and `igflow governance check` refuses a rule naming a field
# no contract has (REDACTION_FIELD_UNKNOWN) or a rule the field does not allow
# (REDACTION_RULE_INVALID).
#
# Result: data.igflow.redaction.rules = {field: rule}, empty for a tenant without rules.
package igflow.redaction

import rego.v1

rules := object.get(data.redaction.tenants, input.tenant_id, {})
