// Record the intent before the POST: a crash after this point leaves the bundle 'sending'.
// Returns how long ago the previous send of it began (null if none was recorded): a send left
// 'sending' by a crash long ago is no longer under way on the target.
MATCH (b:Bundle {uid: $uid})
WITH b, b.sent_at AS previous
SET b.status = 'sending', b.attempts = coalesce(b.attempts, 0) + 1, b.sent_at = datetime()
RETURN CASE WHEN previous IS NULL THEN null
            ELSE duration.inSeconds(previous, b.sent_at).seconds END AS previous_seconds_ago
