// The fingerprint of the linkage key the transfer's copies are made with (never the key).
MATCH (t:Transfer {name: $name})
SET t.key_fingerprint = $key_fingerprint, t.updated_at = datetime()
