// Cycle-closing references created in a second phase (create without them, then update).
UNWIND $rows AS row
MATCH (a:Resource {uid: row.from})-[r:REFERENCES]->(b:Resource {uid: row.to})
SET r.deferred = true
