// Resources of a bundle that the target accepted while its refused resources were isolated.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.status = 'loaded', n.target_id = row.target_id, n.target_version = row.target_version,
    n.linkage_hash = row.linkage_hash, n.pending_update = row.pending_update,
    n.error = null, n.loaded_at = datetime()
