// Changes a sync has not applied: updates left alone (a conflict: the copy changed on the target) or refused, and copies to remove (deleted on the source, or no longer matched).
MATCH (n:Resource {transfer: $transfer})
WHERE n.sync_pending IS NOT NULL
RETURN n, n.key AS key, n.sync_pending AS pending, coalesce(n.sync_conflict, false) AS conflict,
       coalesce(n.sync_error, n.sync_reason) AS why
ORDER BY pending, key
LIMIT 300
