// Transition back to created: more is crawled into the transfer, so it must be planned again.
MATCH (t:Transfer {name: $name})
SET t.crawl_done = false, t.plan_done = false, t.updated_at = datetime()
