package wire

// Stats is the JSON document a StatReply carries (the schema of
// `tandem stat`). Fields are added, never renamed: clients ignore unknown ones.
type Stats struct {
	Instance string `json:"instance"`
	Version  string `json:"version"`
	Engine   string `json:"engine"` // event-loop backend in use and why, e.g. "epoll"
	Loops    int    `json:"loops"`  // event loops (shards)
	// ZeroCopy describes zero-copy deliveries (io_uring only; absent otherwise).
	ZeroCopy      *ZeroCopyStats `json:"zero_copy,omitempty"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Connections   int            `json:"connections"`   // open client connections
	Subscriptions int            `json:"subscriptions"` // active subscriptions
	Stored        uint64         `json:"messages_stored"`
	Duplicates    uint64         `json:"duplicates_dropped"`
	// Conflicts counts copies of a stored (publisher, pubSeq) with another
	// topic or payload: client publishes refused sequence-reused, and
	// replicated records not stored.
	Conflicts uint64 `json:"conflicts"`
	// Refused counts publishes refused permanently (too-large, bad topic,
	// sequence-reused).
	Refused uint64        `json:"publishes_refused"`
	Journal JournalStats  `json:"journal"`
	Topics  []TopicStats  `json:"topics"`
	Clients []ClientStats `json:"clients,omitempty"`
	// Replication lists this instance's destinations (absent without
	// replication).
	Replication []DestinationStats `json:"replication,omitempty"`
	// ReplicationListen is where peers connect ("" when not listening).
	ReplicationListen string `json:"replication_listen,omitempty"`

	// Delivered counts Deliver frames written to subscribers since start.
	Delivered uint64 `json:"messages_delivered"`
	// SlowConsumers: connections whose deliveries wait now for their
	// output to drain below write-high-water.
	SlowConsumers int `json:"slow_consumers"`
	// Storage is "ok", or "failed: <cause>" once the journal failed (the
	// instance then accepts no clients; see docs/architecture.md).
	Storage string `json:"storage,omitempty"`
	// StorageError is the journal's error alone once it failed.
	StorageError string `json:"storage_error,omitempty"`
	// State is "standby" from a shared-store passive (docs/ha.md), whose
	// document carries only Instance, UptimeSeconds, Storage ("standby"),
	// State and Active; absent from an active instance.
	State string `json:"state,omitempty"`
	// Active names the shared-store active as "HOST pid PID" (from the
	// lock file; "unknown" if unreadable); only with State "standby".
	Active string `json:"active,omitempty"`
	// Stages is the sampled per-stage latency breakdown of persisted acks
	// (engine/stages.go), cumulative since start; stages with no sample
	// are left out.
	Stages []StageStats `json:"stages,omitempty"`
}

// StageStats is one stage's latency histogram: Counts[i] observations in
// bucket i of internal/hist.Fine's layout (nanoseconds; 8 buckets per power
// of two), cut after the last non-empty bucket.
type StageStats struct {
	Name   string   `json:"name"`
	Counts []uint64 `json:"counts"`
}

// ZeroCopyStats counts deliveries sent from the journal mapping.
type ZeroCopyStats struct {
	MinBytes    int    `json:"min_bytes"`     // records at least this large go out zero-copy
	Sends       uint64 `json:"sends"`         // SENDMSG_ZC submissions
	Bytes       uint64 `json:"bytes"`         // record bytes sent zero-copy
	Held        int64  `json:"segments_held"` // journal segment holds awaiting the kernel's notification
	CopiedConns uint64 `json:"copied_conns"`  // connections switched back to copying: the kernel copied anyway (loopback)
}

// DestinationStats describes one replication destination.
type DestinationStats struct {
	Name         string  `json:"name"`
	Addr         string  `json:"addr,omitempty"`   // empty: accept-only
	Mode         string  `json:"mode"`             // configured: sync or async
	State        string  `json:"state"`            // sync, async, downgraded or fork
	Reason       string  `json:"reason,omitempty"` // why the state is fork
	Connected    bool    `json:"connected"`
	Passthrough  bool    `json:"passthrough,omitempty"`
	Topics       string  `json:"topics,omitempty"`
	SentThrough  uint64  `json:"sent_through"`  // local seq examined and sent
	AckedThrough uint64  `json:"acked_through"` // local seq durable on the destination
	LagMessages  uint64  `json:"lag_messages"`
	LagSeconds   float64 `json:"lag_seconds"`
	// SkippedTooLarge: records not shipped to the destination, larger
	// than its frame limit allows. MaxRecord: the largest record it takes
	// (0: not known yet).
	SkippedTooLarge uint64 `json:"skipped_too_large,omitempty"`
	MaxRecord       int    `json:"max_record,omitempty"`
	// HoldBytes: journal bytes kept for the destination (not acknowledged
	// by it; an estimate); HoldAlarm: more than repl-hold-alarm-bytes.
	HoldBytes int64 `json:"hold_bytes,omitempty"`
	HoldAlarm bool  `json:"hold_alarm,omitempty"`
}

// JournalStats describes the journal in a Stats document.
type JournalStats struct {
	FirstSeq  uint64 `json:"first_seq"`
	LastSeq   uint64 `json:"last_seq"`
	SyncedSeq uint64 `json:"synced_seq"`
	Bytes     int64  `json:"bytes"`
	Segments  int    `json:"segments"`
	Syncs     uint64 `json:"syncs"`
	SyncVia   string `json:"sync_via,omitempty"` // "uring": group commits through io_uring; "syscall": pwrite + fdatasync
	// PreallocFailures counts failed attempts to preallocate the next
	// segment (each retried; a failure when the segment is needed fails
	// the journal).
	PreallocFailures uint64 `json:"prealloc_failures"`

	// UsedBytes is what the segments hold (headers and records), without
	// the preallocated zeros after the tail's last record; Bytes is the
	// segment files' size, preallocation included.
	UsedBytes int64 `json:"used_bytes"`
	// RetentionHeldBytes: segments retention would delete now but keeps
	// because a replication destination has not persisted them.
	RetentionHeldBytes int64 `json:"retention_held_bytes,omitempty"`
}

// TopicStats counts messages stored per topic since the journal began
// (rebuilt from the journal at start-up).
type TopicStats struct {
	Topic    string `json:"topic"`
	Messages uint64 `json:"messages"`
}

// ClientStats describes one connected client.
type ClientStats struct {
	Name          string `json:"name"`
	Remote        string `json:"remote"`
	Loop          int    `json:"loop"`
	Subscriptions int    `json:"subscriptions"`
	LastPubSeq    uint64 `json:"last_pub_seq"`
}
