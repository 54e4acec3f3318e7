package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemhq/tandem/internal/hist"
)

// The metrics /metrics exports besides the Go runtime's and the process's
// (go_*, process_*). Counters count since the process started, except
// tandem_messages_stored_total, tandem_duplicates_total and
// tandem_publisher_conflicts_total, which are the stat document's counts
// (messages_stored is rebuilt from the journal at start-up, so it starts
// at what the journal holds). Histograms are in seconds or records.
var (
	descStored = prometheus.NewDesc("tandem_messages_stored_total",
		"Messages stored in the journal (published here or replicated in); rebuilt from the journal at start-up.", nil, nil)
	descDelivered = prometheus.NewDesc("tandem_messages_delivered_total",
		"Deliver frames written to subscribers since start.", nil, nil)
	descBytes = prometheus.NewDesc("tandem_bytes_stored_total",
		"Record bytes (header, topic, payload) the journal wrote and synced since start.", nil, nil)
	descDuplicates = prometheus.NewDesc("tandem_duplicates_total",
		"Publishes and replicated records dropped as exact duplicates of a stored (publisher, sequence).", nil, nil)
	descConflicts = prometheus.NewDesc("tandem_publisher_conflicts_total",
		"Copies of a stored (publisher, sequence) with another topic or payload: publishes refused sequence-reused and replicated records not stored.", nil, nil)
	descRefused = prometheus.NewDesc("tandem_publishes_refused_total",
		"Publishes refused permanently (too-large, bad topic, sequence-reused).", nil, nil)
	descSync = prometheus.NewDesc("tandem_journal_fsync_seconds",
		"Time to write and fdatasync one group commit (through io_uring: the linked write+sync chain).", nil, nil)
	descBatch = prometheus.NewDesc("tandem_journal_batch_records",
		"Records per group commit.", nil, nil)
	descAck = prometheus.NewDesc("tandem_persisted_ack_seconds",
		"From appending a read batch of publishes to sending its persisted ack (durable here and on every sync peer); one loop iteration of resolution.", nil, nil)
	descJournalBytes = prometheus.NewDesc("tandem_journal_bytes",
		"Journal bytes in use: segment headers and records, without the preallocated tail (as tandem stat shows).", nil, nil)
	descJournalFileBytes = prometheus.NewDesc("tandem_journal_file_bytes",
		"Size of the journal's segment files, preallocation included.", nil, nil)
	descSegments = prometheus.NewDesc("tandem_journal_segments",
		"Journal segment files.", nil, nil)
	descConns = prometheus.NewDesc("tandem_connections",
		"Open client connections.", nil, nil)
	descSubs = prometheus.NewDesc("tandem_subscriptions",
		"Active subscriptions.", nil, nil)
	descSlow = prometheus.NewDesc("tandem_slow_consumers",
		"Connections whose deliveries wait now for their output to drain below write-high-water.", nil, nil)
	descLagMsgs = prometheus.NewDesc("tandem_replication_lag_messages",
		"Messages the peer should have and has not acknowledged as durable.", []string{"peer"}, nil)
	descLagSecs = prometheus.NewDesc("tandem_replication_lag_seconds",
		"Age of the oldest message the peer should have and has not acknowledged (0 when it has everything).", []string{"peer"}, nil)
	descState = prometheus.NewDesc("tandem_replication_state",
		"1 for the peer's current state, 0 for the others (sync, async, downgraded).", []string{"peer", "state"}, nil)
	descConnected = prometheus.NewDesc("tandem_replication_connected",
		"1 while the replication link to the peer is up.", []string{"peer"}, nil)
	descHeld = prometheus.NewDesc("tandem_retention_held_bytes",
		"Journal bytes retention would delete now but keeps because a replication peer has not persisted them.", nil, nil)
	descFailed = prometheus.NewDesc("tandem_storage_failed",
		"1 once a journal write or sync failed (no further appends), else 0.", nil, nil)
	descUp = prometheus.NewDesc("tandem_up",
		"1 once recovery is done and the instance serves clients, 0 while it recovers.", nil, nil)
)

// replStates are the states tandem_replication_state always reports; a
// state a newer replicator reports that is not here is added to them.
var replStates = []string{"sync", "async", "downgraded"}

// collector reads every tandem_ metric at scrape time.
type collector struct{ l *Listener }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStored, descDelivered, descBytes, descDuplicates, descConflicts, descRefused,
		descSync, descBatch, descAck, descJournalBytes, descJournalFileBytes, descSegments, descConns, descSubs, descSlow,
		descLagMsgs, descLagSecs, descState, descConnected, descHeld, descFailed, descUp} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.srv.Load()
	if s == nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	st := s.Stats()
	j := s.Journal()
	js := j.Stats()
	m := s.Metrics()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	histogram := func(d *prometheus.Desc, h hist.Snapshot, unit float64) {
		ch <- prometheus.MustNewConstHistogram(d, h.Count(), float64(h.Sum)*unit, h.Cumulative(unit))
	}
	counter(descStored, st.Stored)
	counter(descDelivered, m.Delivered)
	counter(descBytes, js.WrittenBytes)
	counter(descDuplicates, st.Duplicates)
	counter(descConflicts, st.Conflicts)
	counter(descRefused, st.Refused)
	histogram(descSync, j.SyncLatency(), 1e-9)
	histogram(descBatch, j.BatchRecords(), 1)
	histogram(descAck, m.PersistedAck, 1e-9)
	gauge(descJournalBytes, float64(st.Journal.UsedBytes))
	gauge(descJournalFileBytes, float64(st.Journal.Bytes))
	gauge(descSegments, float64(st.Journal.Segments))
	gauge(descConns, float64(st.Connections))
	gauge(descSubs, float64(st.Subscriptions))
	gauge(descSlow, float64(m.SlowConsumers))
	gauge(descHeld, float64(st.Journal.RetentionHeldBytes))
	failed := 0.0
	if js.Err != nil {
		failed = 1
	}
	gauge(descFailed, failed)
	for _, d := range st.Replication {
		gauge(descLagMsgs, float64(d.LagMessages), d.Name)
		gauge(descLagSecs, d.LagSeconds, d.Name)
		connected := 0.0
		if d.Connected {
			connected = 1
		}
		gauge(descConnected, connected, d.Name)
		known := false
		for _, state := range replStates {
			v := 0.0
			if state == d.State {
				v, known = 1, true
			}
			gauge(descState, v, d.Name, state)
		}
		if !known {
			gauge(descState, 1, d.Name, d.State)
		}
	}
}
