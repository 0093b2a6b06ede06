// Record the intent before the POST: a crash after this point leaves the bundle 'sending'.
MATCH (b:Bundle {uid: $uid})
SET b.status = 'sending', b.attempts = coalesce(b.attempts, 0) + 1, b.sent_at = datetime()
