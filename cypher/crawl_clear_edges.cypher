// Forget the outgoing references of resources about to be (re)staged.
UNWIND $uids AS uid
MATCH (:Resource {uid: uid})-[r:REFERENCES]->()
DELETE r
