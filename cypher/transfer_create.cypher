// Create the transfer record, or return the existing one unchanged.
MERGE (t:Transfer {name: $name})
ON CREATE SET t += $props, t.created_at = datetime(), t.schema_version = $schema_version
RETURN t {.*} AS transfer
