// Transition: the target copy now holds the new source content (its new version recorded).
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.sync_pending = null, n.sync_error = null, n.target_version = row.target_version,
    n.updated_generation = $generation, n.updated_at = datetime()
