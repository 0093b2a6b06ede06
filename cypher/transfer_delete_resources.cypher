// Delete a transfer's staged resources (their edges are gone already), committed in batches.
MATCH (n:Resource {transfer: $name})
CALL (n) {
  DETACH DELETE n
} IN TRANSACTIONS OF 10000 ROWS
RETURN count(n) AS deleted
