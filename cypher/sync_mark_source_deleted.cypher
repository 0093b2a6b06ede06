// Loaded resources deleted on the source, or seeds no longer matched by their search:
// reported, and removed from the target by a sync with delete.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid, status: 'loaded'})
SET n.sync_pending = 'delete', n.sync_reason = row.reason, n.sync_error = null,
    n.changed_generation = $generation
