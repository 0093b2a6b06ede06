// Clear the plan's decisions on references (deferred, dropped) so they are taken again.
MATCH (:Resource {transfer: $transfer})-[r:REFERENCES]->()
WHERE r.deferred OR r.dropped
CALL (r) {
  SET r.deferred = null, r.dropped = null
} IN TRANSACTIONS OF 10000 ROWS
RETURN count(r) AS cleared
