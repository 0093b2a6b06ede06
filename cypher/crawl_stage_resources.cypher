// Stage a page of fetched resources ($rows) with their references ($edges) in one query; an
// edge starts at a resource of $rows ($edges[i].from < size($rows)).
// $targets: the other resources the page refers to, each once; unknown ones become
// placeholders (or dangling, with the reason). Each resource and target is merged once;
// an edge names its two ends by their position in $rows followed by $targets, so writing
// it looks nothing up again.
CALL () {
  UNWIND range(0, size($targets) - 1) AS i
  WITH i, $targets[i] AS target
  MERGE (b:Resource {uid: target.uid})
  ON CREATE SET b:$(target.type), b.transfer = $transfer, b.key = target.key, b.type = target.type,
                b.source_id = target.id, b.status = target.status, b.error = target.error
  WITH i, b ORDER BY i
  RETURN collect(b) AS targets
}
CALL () {
  UNWIND range(0, size($rows) - 1) AS i
  WITH i, $rows[i] AS row
  MERGE (n:Resource {uid: row.uid})
  ON CREATE SET n:$(row.type), n.transfer = $transfer, n.key = row.key, n.type = row.type, n.source_id = row.id
  // a write locks the node before its status and references are read: a page written at the
  // same time (Crawler: two writes in flight) or a plan round (overlap) must finish first
  ON MATCH SET n.uid = row.uid
  WITH i, n, row, n.status IS NULL OR n.status IN ['placeholder', 'dangling', 'crawled'] AS fresh
  // a resource already planned or loaded (while the crawl goes on, or in a crawl resumed after
  // its load began) keeps its staged JSON and the references read from it, with their flags
  CALL (n, row, fresh) {
    WITH n, row, fresh
    WHERE fresh
    CALL (n) {
      MATCH (n)-[old:REFERENCES]->()
      DELETE old
    }
    SET n.json = row.json,
        n.version = row.version,
        n.content_hash = row.content_hash,
        n.status = 'crawled',
        n.error = null,
        n.seed = coalesce(n.seed, false) OR row.seed,
        n.crawled_at = datetime()
  }
  WITH i, n, fresh ORDER BY i
  RETURN collect(n) AS nodes, collect(fresh) AS fresh
}
WITH nodes + targets AS ends, fresh
UNWIND $edges AS edge
WITH ends[edge.from] AS a, ends[edge.to] AS b, edge
WHERE fresh[edge.from]
CREATE (a)-[:REFERENCES {path: edge.path, reference: edge.reference, kind: edge.kind}]->(b)
