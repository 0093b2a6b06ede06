// What a worker has loaded so far (bundles, resources, created), and whether it still works.
MATCH (w:Worker {uid: $worker})
SET w.bundles = $bundles, w.loaded = $loaded, w.created = $created, w.seconds = $seconds,
    w.state = $state, w.last_seen = datetime()
