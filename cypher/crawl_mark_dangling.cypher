UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.status = 'dangling', n.error = row.detail
