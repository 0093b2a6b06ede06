// Has any bundle of this transfer been sent to the target?
OPTIONAL MATCH (b:Bundle&!Resource {transfer: $transfer})
WHERE b.status IN ['sending', 'loaded', 'failed']
RETURN count(b) > 0 AS started
