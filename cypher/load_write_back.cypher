// Record what the target created for one bundle, atomically with the bundle's status.
MATCH (b:Bundle {uid: $uid})
SET b.status = 'loaded', b.loaded_at = datetime(), b.seconds = $seconds, b.error = null
WITH b
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.status = 'loaded', n.target_id = row.target_id, n.target_version = row.target_version,
    n.linkage_hash = row.linkage_hash, n.pending_update = row.pending_update,
    n.error = null, n.loaded_at = datetime()
