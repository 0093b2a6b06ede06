// One REFERENCES edge per reference path; unknown targets become placeholders.
UNWIND $rows AS row
MATCH (a:Resource {uid: row.from})
MERGE (b:Resource {uid: row.to})
ON CREATE SET b.transfer = $transfer, b.key = row.to_key, b.type = row.to_type,
              b.source_id = row.to_id, b.status = row.to_status, b.error = row.to_error
SET b:$(row.to_type)
MERGE (a)-[r:REFERENCES {path: row.path}]->(b)
SET r.reference = row.reference, r.kind = row.kind
