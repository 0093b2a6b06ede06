// One REFERENCES edge per reference path; unknown targets become placeholders.
// The referrers' old edges were deleted just before (crawl_clear_edges), so CREATE is safe
// (sync: changed resources; a crawl stages with crawl_stage_resources).
UNWIND $rows AS row
MATCH (a:Resource {uid: row.from})
MERGE (b:Resource {uid: row.to})
ON CREATE SET b:$(row.to_type), b.transfer = $transfer, b.key = row.to_key, b.type = row.to_type,
              b.source_id = row.to_id, b.status = row.to_status, b.error = row.to_error
CREATE (a)-[:REFERENCES {path: row.path, reference: row.reference, kind: row.kind}]->(b)
