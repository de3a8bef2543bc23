"""The ground floor: records, settings, errors, reason codes, the wire format, the contracts, the
retry policy, the content digest, the Rego loader, the catalog factory, the store key layout and
the tenant-directory protocol. It imports nothing else of the project; every layer above may
import it."""
