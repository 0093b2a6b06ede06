// A loaded resource that changed on the source: its new JSON, version and hash, and an update
// of its copy on the target to send (its outgoing references are rewritten with it).
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid, status: 'loaded'})
SET n.json = row.json, n.version = row.version, n.content_hash = row.content_hash,
    n.sync_pending = 'update', n.sync_error = null, n.changed_generation = $generation,
    n.source_deleted = null, n.crawled_at = datetime()
