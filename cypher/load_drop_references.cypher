// References to rejected or blocked resources, removed from their referrers (on_reject drop-reference).
UNWIND $rows AS row
MATCH (:Resource {uid: row.uid})-[r:REFERENCES {path: row.path}]->()
SET r.dropped = true, r.dropped_because = row.because
