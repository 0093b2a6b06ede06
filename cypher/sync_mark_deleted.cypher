// Transition loaded -> deleted: the copy was removed from the target.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.status = 'deleted', n.sync_pending = null, n.sync_error = null, n.deleted_generation = $generation,
    n.deleted_at = datetime()
