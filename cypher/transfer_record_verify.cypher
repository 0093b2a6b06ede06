// The outcome of the last verify (the transfer's state does not change).
MATCH (t:Transfer {name: $name})
SET t.verified_ok = $ok, t.verify_problems = $problems, t.seconds_verify = $seconds,
    t.updated_at = datetime()
