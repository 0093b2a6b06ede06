// Staged resources whose new source version has the same content: only the version moves.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.version = row.version, n.content_hash = row.content_hash
