// Stage fetched resources; a resource already planned or loaded keeps its staged JSON.
UNWIND $rows AS row
MERGE (n:Resource {uid: row.uid})
ON CREATE SET n:$(row.type), n.transfer = $transfer, n.key = row.key, n.type = row.type, n.source_id = row.id
WITH n, row
WHERE n.status IS NULL OR n.status IN ['placeholder', 'dangling', 'crawled']
SET n.json = row.json,
    n.version = row.version,
    n.content_hash = row.content_hash,
    n.status = 'crawled',
    n.error = null,
    n.seed = coalesce(n.seed, false) OR row.seed,
    n.crawled_at = datetime()
