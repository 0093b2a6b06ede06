// Transition created -> crawled.
MATCH (t:Transfer {name: $name})
SET t.crawl_done = true, t.seconds_crawl = $seconds, t.param_get_missing = $get_missing,
    t.updated_at = datetime()
