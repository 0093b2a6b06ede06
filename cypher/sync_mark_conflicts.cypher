// Transition: the update was not sent (its copy changed on the target since fhirgraph wrote it)
// or the target refused it; the reason is kept, and the next sync tries again.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.sync_error = row.error, n.sync_conflict = row.conflict
