// Package bench is `tandem bench`: Tandem measured side by side with NATS
// JetStream and Redis Streams on the same machine, in the same run, with
// the durability settings spelled out (issue 6).
//
// # Structure
//
//   - System (system.go) is the adapter interface: start a fresh server,
//     connect a windowed publisher with per-message durable acks, connect a
//     subscriber from the start or from now. Tandem (tandem.go), NATS
//     (nats.go, default sync and sync_interval: always) and Redis (redis.go,
//     appendfsync always and everysec) implement it; peers are started as
//     processes on loopback ports with temporary directories, and a missing
//     binary makes Info().Skipped say why (the report lists it).
//   - The replicated peers (peers.go): nats-r3-always and nats-r3-default,
//     a 3-node nats-server cluster with an R3 stream (nats_cluster.go), and
//     redis-replica, a primary with one replica and WAIT 1 0 after each
//     pipeline (redis_replica.go). They run the peer scenarios; the report
//     puts them beside Tandem's sync and async pair (report_replicated.go),
//     and the failover scenario kills the NATS stream leader
//     (nats_failover.go).
//   - Verdicts (verdict.go): issue 15's latency targets checked against a
//     run, one line each, in the report and on stdout.
//   - The scenarios (scenarios.go) are the same code for every system:
//     durable publish throughput, persisted-ack and end-to-end latency at
//     fixed offered rates (open-loop schedule, corrected for coordinated
//     omission: stats.go), fan-out, replay from the start.
//   - Two scenarios are Tandem's own (variants.go), the same measurements
//     against other configurations of Tandem, side by side in one run:
//     pair (one instance, the baseline, vs a sync pair and an async pair of
//     instances replicating to each other, pair.go: closed-loop publish and
//     persisted-ack latency at fixed rates, B's lag polled from A's stat)
//     and engine (durable publish, fan-out and a sync pair's publish with
//     --engine uring and --engine epoll, Settings.EngineRuns times each,
//     alternating; repeat.go makes the medians, resources.go samples the
//     server processes' CPU and context switches from /proc around each
//     step; the report checks issue 5's 1.3x fan-out target).
//   - failover (failover.go; and the NATS R3 peers, nats_failover.go): the failover time an HA client
//     sees: a sync pair of processes, an HA publisher at a fixed rate and
//     an HA subscriber (WithSubID, 50 ms heartbeat) on A; each run SIGKILLs
//     the subscriber's instance and measures the time to the first message
//     through the other one, checking it is the next one (no loss, no
//     repeat), then restarts the killed instance on its data directory.
//   - tls (tls.go, Tandem only, opt-in: not in the default scenarios, run
//     with --scenarios tls): one instance serving plaintext, the baseline,
//     vs one serving TLS (--tls-cert/--tls-key with a CA and an ECDSA
//     P-256 server certificate made at run time, files 0600 in a temporary
//     directory), the load generator on WithTLS: closed-loop publish at
//     Settings.TLSSizes, persisted-ack and end-to-end latency at the fixed
//     Rates; the report gives TLS ÷ plaintext for each.
//   - A scenario whose feature is not released yet is an entry with needs
//     set and no run function: the report lists it as not yet measured.
//   - Estimate (estimate.go, `tandem bench --estimate`) lists the steps of a
//     matrix without running it and estimates its duration, calibrated by
//     an earlier run's step durations.
//   - Run (run.go) probes the machine (machine.go: CPU, cores, kernel, the
//     data directory's filesystem, an fdatasync latency probe), records the
//     Tandem commit and every setting, runs the matrix with a progress
//     display on stderr and returns a RunResult (result.go), written as one
//     JSON file per run. WriteReport (report.go) renders it as markdown with
//     gonum/plot SVG plots (plot.go); Compare (compare.go) prints the change
//     of every figure between two result files.
//
// # Measurement
//
// Every payload starts with a 16-byte header: the publisher's message index
// and the time (ns on the run's monotonic clock) the message was due. Ack
// callbacks map index -> due time through a ring as large as twice the
// window; subscribers read the header, so end-to-end latency needs no
// per-message state, and they check order.
package bench
