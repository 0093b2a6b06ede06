// Members of one level, members of one cycle adjacent, for packing into bundles.
MATCH (n:Resource {transfer: $transfer, status: 'crawled', level: $level})
RETURN n.uid AS uid, n.scc AS scc
ORDER BY coalesce(n.scc, n.uid), n.uid
