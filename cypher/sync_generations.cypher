// The transfer's generations, newest first (one of them may be running: an interrupted sync).
MATCH (g:Generation {transfer: $name})
RETURN g {.*} AS generation
ORDER BY g.number DESC
