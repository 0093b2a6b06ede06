// Return a transfer's unloaded resources to 'crawled' so the plan can be computed again.
MATCH (n:Resource {transfer: $transfer})
WHERE n.status IN ['planned', 'skipped', 'crawled']
SET n.status = 'crawled', n.level = null, n.bundle = null, n.scc = null, n.error = null
WITH count(n) AS reopened
OPTIONAL MATCH (:Resource {transfer: $transfer})-[r:REFERENCES]->()
WHERE r.deferred OR r.dropped
SET r.deferred = null, r.dropped = null
RETURN reopened
