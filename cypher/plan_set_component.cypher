// Place the members of the cycles (strongly connected components) found on one level in their bundles.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.level = row.level, n.scc = row.scc, n.bundle = row.bundle, n.status = 'planned'
