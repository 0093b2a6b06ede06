// Return a transfer's unloaded resources to 'crawled' so the plan can be computed again.
// Committed in batches; the plan's own flags (deferred, dropped) are cleared by plan_reopen_references.
MATCH (n:Resource {transfer: $transfer})
WHERE n.status IN ['planned', 'skipped', 'crawled']
CALL (n) {
  SET n.status = 'crawled', n.level = null, n.bundle = null, n.scc = null, n.error = null
} IN TRANSACTIONS OF 10000 ROWS
RETURN count(n) AS reopened
