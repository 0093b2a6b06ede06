// The staged state of resources that changed on the source (by key).
UNWIND $keys AS key
MATCH (n:Resource {uid: $transfer + '|' + key})
RETURN n.uid AS uid, n.key AS key, n.status AS status, n.version AS version,
       n.content_hash AS content_hash, n.json AS json, n.target_id AS target_id,
       coalesce(n.seed, false) AS seed
