// Keep the seeds of a crawl (for sync to run again) and, from the first crawl, the source's
// clock when it began: what changed on the source after that instant is what sync looks at.
MATCH (t:Transfer {name: $name})
SET t.seeds = coalesce(t.seeds, []) + [s IN $seeds WHERE NOT s IN coalesce(t.seeds, [])],
    t.synced_from = coalesce(t.synced_from, $instant)
