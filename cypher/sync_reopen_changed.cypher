// Resources that never reached the target (dangling, rejected, blocked, skipped) and changed
// on the source (created there, or fixed): read again, planned and sent like new ones.
UNWIND $uids AS uid
MATCH (n:Resource {uid: uid})
WHERE n.status IN ['dangling', 'rejected', 'blocked', 'skipped']
SET n.status = 'placeholder', n.bundle = null, n.level = null, n.scc = null, n.error = null,
    n.reopened_at = datetime()
