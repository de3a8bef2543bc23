# Tenant policy tags: purpose, retention, license and residency of a tenant's data.
#
# input:
#   tenant_id   the tenant whose signals are being tagged
#
# data.tenancy (policies/tenancy.json):
#   tenants     {tenant_id: {tag: value, ...}}   per-tenant overrides of the defaults below
#
# Result: data.igflow.tenancy.tags = {"purpose", "retention", "license", "residency"}, every value
# a string. A tenant the data does not name gets the defaults. The loader rejects any other result
# (a missing, extra or non-string tag) as a policy bug, so a typo in an override cannot pass as a
# default.
package igflow.tenancy

import rego.v1

# The product brief's defaults.
default_tags := {
	"purpose": "benchmarking",
	"retention": "standard-365d",
	"license": "Restricted-TOS",
	"residency": "US",
}

overrides := object.get(data.tenancy.tenants, input.tenant_id, {})

tags := object.union(default_tags, overrides)
