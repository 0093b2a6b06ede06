// Rejected and blocked resources go back to be read from the source again (retrying after a
// fix), and the transfer to be crawled and planned again: both at once, so a crash between
// them cannot leave placeholders that nothing will fetch.
MATCH (t:Transfer {name: $transfer})
OPTIONAL MATCH (n:Resource {transfer: $transfer})
WHERE n.status IN ['rejected', 'blocked']
WITH t, collect(n) AS refused
FOREACH (n IN refused |
  SET n.status = 'placeholder', n.seed = true, n.bundle = null, n.level = null, n.scc = null,
      n.error = null, n.reopened_at = datetime())
FOREACH (_ IN CASE WHEN size(refused) > 0 THEN [1] ELSE [] END |
  SET t.crawl_done = false, t.plan_done = false, t.updated_at = datetime())
RETURN size(refused) AS reopened
