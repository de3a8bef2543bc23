# PSI deconfliction policy: checked by the server *and* the client before any evaluation.
#
# input:
#   role            "server" | "client"     who is asking (the rules are the same for both)
#   action          "table" | "evaluate"    fetch the published table, or evaluate a batch
#   partner_id      the other side's partner id (the client, for a server; the server, for a client)
#   partner_region  where the other side is (ISO 3166 alpha-2, e.g. "US")
#   residency       the residency tag of our own selectors (e.g. "US")
#   mode            "full_intersection" | "intersection_cardinality"
#   batch_size      distinct selectors in the batch (0 for "table")
#   recent_requests evaluation requests from this partner in the current rate window, this one excluded
#
# data.psi:
#   agreements       {partner_id: {modes: [...], regions: [...], min_batch: n, max_requests: n}}
#   min_batch        floor for every agreement's min_batch
#   residency_allows {residency: [regions our data may be matched with]}
#
# Result: data.igflow.psi.decision = {"allow": bool, "reason": code or ""}. The reason is one of
# POLICY_GEO_BLOCK (no agreement for this partner or mode, or a region the agreement or our data's
# residency does not allow), THRESHOLD_NOT_MET (batch below the minimum), RATE_LIMITED; checked in
# that order, so exactly one reason is reported.
package igflow.psi

import rego.v1

agreement := data.psi.agreements[input.partner_id]

geo_blocked if not agreement

geo_blocked if not input.mode in agreement.modes

geo_blocked if not input.partner_region in agreement.regions

geo_blocked if not input.partner_region in object.get(data.psi.residency_allows, input.residency, [])

# (rego-cpp 1.x's max() compares numbers as strings: max([2, 10]) is 2, so no max() here.)
min_batch := agreement.min_batch if agreement.min_batch >= data.psi.min_batch
else := data.psi.min_batch

below_threshold if {
	input.action == "evaluate"
	input.batch_size < min_batch
}

rate_limited if {
	input.action == "evaluate"
	input.recent_requests >= agreement.max_requests
}

reason := "POLICY_GEO_BLOCK" if geo_blocked
else := "THRESHOLD_NOT_MET" if below_threshold
else := "RATE_LIMITED" if rate_limited
else := ""

decision := {"allow": reason == "", "reason": reason}
