// Explicit seeds given by reference: placeholders that must be fetched.
UNWIND $rows AS row
MERGE (n:Resource {uid: row.uid})
ON CREATE SET n.transfer = $transfer, n.key = row.key, n.type = row.type,
              n.source_id = row.id, n.status = 'placeholder'
SET n:$(row.type), n.seed = true
