package bench

// The replicated peers (issue 15): nats-r3-always and nats-r3-default (a
// 3-node NATS cluster with an R3 stream, nats_cluster.go) and
// redis-replica (a Redis primary with one replica and WAIT 1 0,
// redis_replica.go). They run the same scenarios as the single-instance
// peers; the report puts their durable publish and persisted-ack latency
// beside Tandem's sync and async pair (writeReplicatedSection), and the
// failover scenario kills the NATS stream leader (nats_failover.go).

// replicatedSystems are the replicated peers, in report order.
var replicatedSystems = []string{"nats-r3-always", "nats-r3-default", "redis-replica"}

// replicatedReplaySkip: replay reads one copy, as the single-instance
// peers' replay does; preloading at a replicated peer's rate would only
// lengthen the run.
var replicatedReplaySkip = map[string]string{
	"nats-r3-always":  "replay reads the stream leader's file store, as nats-default's (replication and the sync setting only affect writes)",
	"nats-r3-default": "replay reads the stream leader's file store, as nats-default's (replication only affects writes)",
	"redis-replica":   "replay reads the primary's stream, as redis-everysec's (replication only affects writes)",
}

// isReplicated reports whether sys is one of the replicated peers.
func isReplicated(sys string) bool {
	for _, s := range replicatedSystems {
		if s == sys {
			return true
		}
	}
	return false
}
