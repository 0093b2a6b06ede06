MATCH (t:Transfer {name: $name})
RETURN t {.*} AS transfer
