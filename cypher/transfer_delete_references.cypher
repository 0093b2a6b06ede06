// Delete a transfer's reference edges, committed in batches: a node referenced by most of a
// big transfer (an Organization) would otherwise take all its edges into one transaction.
MATCH (:Resource {transfer: $name})-[r:REFERENCES]->()
CALL (r) {
  DELETE r
} IN TRANSACTIONS OF 10000 ROWS
RETURN count(r) AS deleted
