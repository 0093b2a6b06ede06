// For each bundle still to send, the other bundles its resources refer to (deferred and
// dropped references aside): a bundle is sent once those it refers to are done.
UNWIND $numbers AS number
MATCH (n:Resource {transfer: $transfer, bundle: number})-[r:REFERENCES]->(m:Resource)
WHERE r.deferred IS NULL AND r.dropped IS NULL AND m.bundle IS NOT NULL AND m.bundle <> number
RETURN number, collect(DISTINCT m.bundle) AS after
