UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.pending_update = false, n.target_version = row.target_version, n.updated_at = datetime()
