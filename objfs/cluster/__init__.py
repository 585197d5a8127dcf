"""objfs.cluster — nodes that share one catalog and one index through Raft (pysyncobj).

`member.ClusterMember` runs a node's part in its cluster inside `objfs serve`;
`replication.Replicator` takes the place of the WAL, so the store's records
and the catalog's changes are applied in one log order on every node;
`placement` spreads each stripe's fragments over the nodes and `remote` reads
and writes the other nodes' fragments through `api`; `moves` moves stripes off
a leaving node and back into the full shape; `users` keeps a node's S3 users
equal to the catalog's. `docs/cluster.md` has the whole design; `commands` is
the `objfs cluster` CLI.
"""
