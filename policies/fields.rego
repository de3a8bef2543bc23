# Field coverage: how each field of the signal contract (schemas/avro/signal.v*.avsc) is
# classified. Every field of every contract version must be named here: `igflow governance
# check` (in `make test`) fails on a contract field this policy does not cover, so no field
# reaches the stores without a decision about it.
#
# Classes:
#   identifier  names a tenant, a record or its origin; kept in the clear (keys, joins)
#   measure     a number the score is computed from
#   time        event time
#   descriptor  free text describing the record (type); kept in the clear
#   sensitive   identifies an entity outside the platform; encrypted per tenant or redacted
#               wherever it is stored (PSI selectors)
#
# Result: data.igflow.fields.classification = {field: class}; data.igflow.fields.sensitive =
# the set of sensitive fields.
package igflow.fields

import rego.v1

classes := {"identifier", "measure", "time", "descriptor", "sensitive"}

classification := {
	"tenant_id": "identifier",
	"signal_id": "identifier",
	"source": "identifier",
	"type": "descriptor",
	"value": "measure",
	"weight": "measure",
	"ts": "time",
	"selectors": "sensitive",
}

sensitive contains field if {
	some field, class in classification
	class == "sensitive"
}
