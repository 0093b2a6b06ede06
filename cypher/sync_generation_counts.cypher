// What one generation changed, and what it left waiting (conflicts, refusals, deletions).
MATCH (n:Resource {transfer: $transfer})
WHERE n.changed_generation = $generation OR n.updated_generation = $generation
   OR n.deleted_generation = $generation OR n.sync_pending IS NOT NULL
RETURN sum(CASE WHEN n.updated_generation = $generation THEN 1 ELSE 0 END) AS updated,
       sum(CASE WHEN n.deleted_generation = $generation THEN 1 ELSE 0 END) AS removed,
       sum(CASE WHEN n.sync_pending = 'delete' THEN 1 ELSE 0 END) AS deleted,
       sum(CASE WHEN n.sync_pending = 'update' AND n.sync_conflict THEN 1 ELSE 0 END) AS conflicts,
       sum(CASE WHEN n.sync_pending = 'update' AND n.sync_error IS NOT NULL AND NOT coalesce(n.sync_conflict, false)
           THEN 1 ELSE 0 END) AS refused
