package journal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/tandemhq/tandem/record"
)

// Checkpoint files; part of the on-disk format (see Checkpoints in doc.go).
//
// A checkpoint describes one sealed segment, so that Open can trust it
// without reading its records, and may carry an opaque state blob from the
// journal's user (the engine's index) as of a given seq. Layout, all
// integers little-endian:
//
//	 0        8      12     16          24          32          40
//	+--------+------+------+-----------+-----------+-----------+
//	| magic  | vers | hdr  | first seq | count     | end offset|
//	|TNDMCKP1| 1 u32|96 u32| u64       | u64       | u64       |
//	+--------+------+------+-----------+-----------+-----------+
//	40          48          56                    72        76        80
//	+-----------+-----------+---------------------+---------+---------+
//	| seg size  | last time | journal id 16 bytes | interval| entries |
//	| u64       | i64       |                     | u32     | n u32   |
//	+-----------+-----------+---------------------+---------+---------+
//	80          88          92        96
//	+-----------+-----------+---------+------------------+-------------+-------+
//	| state seq | state len | mfst len| n x u32 index    | state bytes | manifest | crc32c|
//	| u64       | u32       | u32     | (segment offsets)|             |          | u32   |
//	+-----------+-----------+---------+------------------+-------------+----------+-------+
//
// The manifest (mfst len bytes; 0 in older files, where the field was
// reserved) repeats the checkpoints of the older sealed segments, without
// state or manifest: a sequence of u32 length + encoded checkpoint. The
// newest checkpoint carries it, so Open reads one checkpoint file instead
// of one per segment (on a cold disk each read is a random read); older
// checkpoints are rewritten without it along with their state.
//
// The trailing CRC-32C covers every byte before it. count is the number of
// records (first .. first+count-1), end the offset after the last one,
// index[k] the offset of record first+k*interval (the segment's sparse
// index), last time the time field of the last record. A state len of 0
// means no state; state seq is then 0.
const (
	ckptMagic      = "TNDMCKP1"
	ckptVersion    = 1
	ckptHeaderSize = 96
	ckptSuffix     = ".ckpt"
	ckptMaxState   = 1 << 30 // refuse to read a state blob larger than this

	ckOffMagic    = 0
	ckOffVersion  = 8
	ckOffHdrSize  = 12
	ckOffFirst    = 16
	ckOffCount    = 24
	ckOffEnd      = 32
	ckOffSegSize  = 40
	ckOffLastTime = 48
	ckOffID       = 56
	ckOffInterval = 72
	ckOffEntries  = 76
	ckOffStateSeq = 80
	ckOffStateLen = 88
	ckOffMfstLen  = 92
)

// checkpointName returns the checkpoint file name of the segment whose
// first record has sequence first.
func checkpointName(first uint64) string {
	return fmt.Sprintf("%0*d%s", segNameDigits, first, ckptSuffix)
}

// parseCheckpointName returns the first sequence encoded in a checkpoint
// file name.
func parseCheckpointName(name string) (uint64, bool) {
	if len(name) != segNameDigits+len(ckptSuffix) || !strings.HasSuffix(name, ckptSuffix) {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:segNameDigits], 10, 64)
	return n, err == nil
}

// checkpoint is a decoded checkpoint file.
type checkpoint struct {
	first, count uint64
	end          int64
	segSize      int64
	lastTime     int64
	id           record.JournalID
	interval     int
	index        []uint32
	stateSeq     uint64
	state        []byte // nil: none
	// manifest holds the checkpoints of older sealed segments (no state,
	// no manifest of their own).
	manifest []*checkpoint
}

func (c *checkpoint) encode() []byte {
	var mfst []byte
	for _, m := range c.manifest {
		e := m.encode()
		mfst = binary.LittleEndian.AppendUint32(mfst, uint32(len(e)))
		mfst = append(mfst, e...)
	}
	n := ckptHeaderSize + 4*len(c.index) + len(c.state) + len(mfst) + 4
	b := make([]byte, n)
	copy(b[ckOffMagic:], ckptMagic)
	le := binary.LittleEndian
	le.PutUint32(b[ckOffVersion:], ckptVersion)
	le.PutUint32(b[ckOffHdrSize:], ckptHeaderSize)
	le.PutUint64(b[ckOffFirst:], c.first)
	le.PutUint64(b[ckOffCount:], c.count)
	le.PutUint64(b[ckOffEnd:], uint64(c.end))
	le.PutUint64(b[ckOffSegSize:], uint64(c.segSize))
	le.PutUint64(b[ckOffLastTime:], uint64(c.lastTime))
	copy(b[ckOffID:], c.id[:])
	le.PutUint32(b[ckOffInterval:], uint32(c.interval))
	le.PutUint32(b[ckOffEntries:], uint32(len(c.index)))
	if c.state != nil {
		le.PutUint64(b[ckOffStateSeq:], c.stateSeq)
		le.PutUint32(b[ckOffStateLen:], uint32(len(c.state)))
	}
	le.PutUint32(b[ckOffMfstLen:], uint32(len(mfst)))
	p := ckptHeaderSize
	for _, off := range c.index {
		le.PutUint32(b[p:], off)
		p += 4
	}
	p += copy(b[p:], c.state)
	p += copy(b[p:], mfst)
	le.PutUint32(b[p:], record.Checksum(b[:p]))
	return b
}

// decodeCheckpoint parses and checks a checkpoint file's bytes: magic,
// version, CRC and internal consistency. Whether it matches its segment is
// checked by trustCheckpoint.
func decodeCheckpoint(b []byte) (*checkpoint, error) {
	le := binary.LittleEndian
	if len(b) < ckptHeaderSize+4 {
		return nil, fmt.Errorf("short checkpoint (%d bytes)", len(b))
	}
	if string(b[:8]) != ckptMagic {
		return nil, fmt.Errorf("bad magic %q", b[:8])
	}
	if got, want := le.Uint32(b[len(b)-4:]), record.Checksum(b[:len(b)-4]); got != want {
		return nil, fmt.Errorf("checksum %08x, want %08x", got, want)
	}
	if v := le.Uint32(b[ckOffVersion:]); v != ckptVersion {
		return nil, fmt.Errorf("unsupported checkpoint version %d", v)
	}
	if hs := le.Uint32(b[ckOffHdrSize:]); hs != ckptHeaderSize {
		return nil, fmt.Errorf("header size %d, want %d", hs, ckptHeaderSize)
	}
	c := &checkpoint{
		first:    le.Uint64(b[ckOffFirst:]),
		count:    le.Uint64(b[ckOffCount:]),
		end:      int64(le.Uint64(b[ckOffEnd:])),
		segSize:  int64(le.Uint64(b[ckOffSegSize:])),
		lastTime: int64(le.Uint64(b[ckOffLastTime:])),
		interval: int(le.Uint32(b[ckOffInterval:])),
		stateSeq: le.Uint64(b[ckOffStateSeq:]),
	}
	copy(c.id[:], b[ckOffID:])
	entries := int(le.Uint32(b[ckOffEntries:]))
	stateLen := int64(le.Uint32(b[ckOffStateLen:]))
	mfstLen := int64(le.Uint32(b[ckOffMfstLen:]))
	if want := int64(ckptHeaderSize) + 4*int64(entries) + stateLen + mfstLen + 4; want != int64(len(b)) {
		return nil, fmt.Errorf("file has %d bytes, header says %d", len(b), want)
	}
	if c.interval <= 0 {
		return nil, errors.New("zero index interval")
	}
	if want := (c.count + uint64(c.interval) - 1) / uint64(c.interval); uint64(entries) != want {
		return nil, fmt.Errorf("%d index entries for %d records at interval %d", entries, c.count, c.interval)
	}
	c.index = make([]uint32, entries)
	p := ckptHeaderSize
	for k := range c.index {
		c.index[k] = le.Uint32(b[p:])
		p += 4
	}
	if stateLen > 0 {
		c.state = append([]byte(nil), b[p:p+int(stateLen)]...)
	}
	p += int(stateLen)
	for m := b[p : p+int(mfstLen)]; len(m) > 0; {
		if len(m) < 4 || int64(le.Uint32(m)) > int64(len(m)-4) {
			return nil, errors.New("manifest entry does not fit")
		}
		n := int(le.Uint32(m))
		e, err := decodeCheckpoint(m[4 : 4+n])
		if err != nil {
			return nil, fmt.Errorf("manifest entry: %v", err)
		}
		if e.state != nil || e.manifest != nil || e.first >= c.first {
			return nil, errors.New("manifest entry with a state, a manifest, or not older")
		}
		c.manifest = append(c.manifest, e)
		m = m[4+n:]
	}
	return c, nil
}

// readCheckpoint reads and decodes the checkpoint file at path.
func readCheckpoint(fs FS, path string) (*checkpoint, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size > ckptMaxState+ckptHeaderSize+64<<20 {
		return nil, fmt.Errorf("checkpoint of %d bytes is too large", size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return decodeCheckpoint(b)
}

// trustCheckpoint checks that c describes s (a sealed segment whose header
// and size openSegment verified) and, if so, installs its sparse index, end
// and count without scanning the records. Besides the checkpoint's own
// fields it reads two places of the segment: the last record (which must
// parse, verify and carry seq first+count-1) and the length field at end
// (which must be zero). A mismatch returns why, and the caller scans.
func trustCheckpoint(s *segment, c *checkpoint, interval int) error {
	switch {
	case c.first != s.first:
		return fmt.Errorf("first seq %d, segment starts at %d", c.first, s.first)
	case s.hdr.id.IsZero():
		return errors.New("segment header has no journal id")
	case c.id != s.hdr.id:
		return fmt.Errorf("journal id %s, segment has %s", c.id, s.hdr.id)
	case c.segSize != s.size:
		return fmt.Errorf("segment size %d, file has %d", c.segSize, s.size)
	case c.interval != interval:
		return fmt.Errorf("index interval %d, journal uses %d", c.interval, interval)
	case c.end < segHeaderSize || c.end > s.size:
		return fmt.Errorf("end offset %d out of range", c.end)
	case len(c.index) > len(s.index):
		return fmt.Errorf("%d index entries, segment holds at most %d", len(c.index), len(s.index))
	}
	if c.count == 0 {
		if c.end != segHeaderSize {
			return fmt.Errorf("no records but end offset %d", c.end)
		}
	} else {
		for k, off := range c.index {
			if int64(off) < segHeaderSize || int64(off) >= c.end || (k > 0 && off <= c.index[k-1]) {
				return fmt.Errorf("index entry %d (offset %d) out of order or range", k, off)
			}
		}
		last := s.first + c.count - 1
		k := (c.count - 1) / uint64(interval)
		off := int64(c.index[k])
		for r := (c.count - 1) % uint64(interval); r > 0; r-- {
			n := record.Length(s.data[off:])
			if n < record.HeaderSize || off+int64(n) > c.end {
				return fmt.Errorf("record at offset %d does not fit before the end offset", off)
			}
			off += int64(n)
		}
		v, n, err := record.Parse(s.data[off:c.end])
		if err == nil {
			err = v.Verify()
		}
		if err == nil && v.Seq() != last {
			err = fmt.Errorf("seq %d, want %d", v.Seq(), last)
		}
		if err == nil && off+int64(n) != c.end {
			err = fmt.Errorf("ends at %d, checkpoint says %d", off+int64(n), c.end)
		}
		if err != nil {
			return fmt.Errorf("last record at offset %d: %v", off, err)
		}
		if v.Time() != c.lastTime {
			return fmt.Errorf("last record time %d, checkpoint says %d", v.Time(), c.lastTime)
		}
	}
	if c.end+4 <= s.size && record.Length(s.data[c.end:]) != 0 {
		return fmt.Errorf("data after the end offset %d", c.end)
	}
	copy(s.index, c.index)
	s.end = c.end
	s.count = c.count
	return nil
}

// sameAsScan reports how c differs from what a scan of s found (""
// if it does not).
func sameAsScan(s *segment, c *checkpoint, interval int) string {
	switch {
	case c.first != s.first || c.id != s.hdr.id || c.segSize != s.size || c.interval != interval:
		return "header fields"
	case c.count != s.count:
		return fmt.Sprintf("count %d, scan found %d", c.count, s.count)
	case c.end != s.end:
		return fmt.Sprintf("end offset %d, scan found %d", c.end, s.end)
	}
	for k, off := range c.index {
		if s.index[k] != off {
			return fmt.Sprintf("index entry %d: %d, scan found %d", k, off, s.index[k])
		}
	}
	return ""
}

// ckptJob asks the checkpoint writer for the checkpoint of a sealed
// segment; withState also asks the StateCheckpoint hook for the state.
type ckptJob struct {
	seg       *segment
	withState bool
}

// queueCheckpoint hands a sealed segment to the checkpoint writer. It
// never blocks (the flusher calls it at a rotation).
func (j *Journal) queueCheckpoint(s *segment, withState bool) {
	j.ckptMu.Lock()
	j.ckptJobs = append(j.ckptJobs, ckptJob{s, withState})
	j.ckptMu.Unlock()
	select {
	case j.ckptKick <- struct{}{}:
	default:
	}
}

// checkpointLoop writes the checkpoints of sealed segments, in the
// background so rotations never wait for them. At Close it writes what is
// still queued (the flusher has stopped by then).
func (j *Journal) checkpointLoop() {
	defer j.bg.Done()
	for {
		stopping := false
		select {
		case <-j.ckptKick:
		case <-j.stop:
			stopping = true
		}
		for {
			j.ckptMu.Lock()
			if len(j.ckptJobs) == 0 {
				j.ckptMu.Unlock()
				break
			}
			job := j.ckptJobs[0]
			j.ckptJobs = j.ckptJobs[1:]
			j.ckptMu.Unlock()
			if err := j.writeCheckpoint(job); err != nil {
				// Not fatal: the next Open scans the segment instead.
				j.log.Warn("journal: writing checkpoint (the next start scans this segment instead)", "file", checkpointName(job.seg.first), "err", err)
			}
		}
		if stopping {
			return
		}
	}
}

// writeCheckpoint writes the checkpoint of job.seg: to a temporary file
// (mode 0600), synced, renamed, directory synced. With job.withState and a
// StateCheckpoint hook it holds the hook's state, once the journal has
// synced the seq the state is as of; the previous checkpoint holding a
// state is then rewritten without it.
func (j *Journal) writeCheckpoint(job ckptJob) error {
	s := job.seg
	if j.opts.beforeCheckpoint != nil {
		j.opts.beforeCheckpoint(s.first)
	}
	j.segMu.RLock()
	c := &checkpoint{
		first: s.first, count: s.last + 1 - s.first, end: s.end, segSize: s.size,
		lastTime: s.lastTime, id: j.id, interval: j.opts.IndexInterval,
	}
	sealed := s.sealed
	if job.withState {
		for _, o := range j.segs {
			if o.first >= s.first || !o.sealed {
				break
			}
			n := o.last + 1 - o.first
			c.manifest = append(c.manifest, &checkpoint{
				first: o.first, count: n, end: o.end, segSize: o.size, lastTime: o.lastTime, id: j.id,
				interval: j.opts.IndexInterval,
				index:    append([]uint32(nil), o.index[:(n+uint64(j.opts.IndexInterval)-1)/uint64(j.opts.IndexInterval)]...),
			})
		}
	}
	j.segMu.RUnlock()
	if !sealed {
		return errors.New("internal error: segment not sealed")
	}
	c.index = append([]uint32(nil), s.index[:(c.count+uint64(c.interval)-1)/uint64(c.interval)]...)
	if job.withState && j.opts.StateCheckpoint != nil {
		seq, state, err := j.opts.StateCheckpoint()
		if err != nil {
			return fmt.Errorf("state checkpoint: %w", err)
		}
		if state != nil {
			if len(state) > ckptMaxState {
				return fmt.Errorf("state of %d bytes exceeds %d", len(state), ckptMaxState)
			}
			if err := j.waitSyncedOrStop(seq); err != nil {
				return fmt.Errorf("waiting for seq %d to be synced: %w", seq, err)
			}
			c.state, c.stateSeq = state, seq
		}
	}
	j.retMu.Lock() // retention deletes a segment and its checkpoint under it
	defer j.retMu.Unlock()
	if !j.holds(s) {
		return nil // retention deleted it meanwhile
	}
	if err := j.putCheckpoint(c); err != nil {
		return err
	}
	// Only the newest state and manifest are used: drop the previous ones,
	// unless this checkpoint got no state while a hook exists (the
	// previous state must stay then).
	if job.withState && (c.state != nil || j.opts.StateCheckpoint == nil) {
		prev := j.stateCkpt
		j.stateCkpt = c.first
		if prev != 0 && prev != c.first {
			j.dropState(prev)
		}
	}
	return nil
}

// dropState rewrites the checkpoint of the segment starting at first
// without its state and manifest: only the newest are ever used. Called
// with retMu.
func (j *Journal) dropState(first uint64) {
	path := join(j.opts.Dir, checkpointName(first))
	c, err := readCheckpoint(j.fs, path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			j.log.Warn("journal: reading checkpoint to drop its state", "file", checkpointName(first), "err", err)
		}
		return
	}
	if c.state == nil && c.manifest == nil {
		return
	}
	c.state, c.stateSeq, c.manifest = nil, 0, nil
	if err := j.putCheckpoint(c); err != nil {
		j.log.Warn("journal: rewriting checkpoint without its state", "file", checkpointName(first), "err", err)
	}
}

// waitSyncedOrStop waits until seq is synced, the journal fails, or it
// closes (then seq counts only if the final flush reached it).
func (j *Journal) waitSyncedOrStop(seq uint64) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-j.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := j.WaitSynced(ctx, seq)
	if err != nil && j.synced.Load() >= seq && j.Err() == nil {
		return nil
	}
	return err
}

// holds reports whether s is still in the segment list.
func (j *Journal) holds(s *segment) bool {
	j.segMu.RLock()
	defer j.segMu.RUnlock()
	i := sort.Search(len(j.segs), func(i int) bool { return j.segs[i].first >= s.first })
	return i < len(j.segs) && j.segs[i] == s
}

// putCheckpoint writes c durably under its name: temporary file, sync,
// rename, directory sync.
func (j *Journal) putCheckpoint(c *checkpoint) error {
	name := checkpointName(c.first)
	tmp := join(j.opts.Dir, name+tmpSuffix)
	f, err := createPrivate(j.fs, tmp)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(c.encode(), 0); err != nil {
		f.Close()
		return err
	}
	if err := f.SyncData(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := j.fs.Rename(tmp, join(j.opts.Dir, name)); err != nil {
		return err
	}
	return j.fs.SyncDir(j.opts.Dir)
}

// createPrivate creates (or truncates) name readable by its owner only on
// the OS file system; other file systems have no modes.
func createPrivate(fs FS, name string) (File, error) {
	if _, ok := fs.(OSFS); ok {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, err
		}
		return newOSFile(f), nil
	}
	return fs.Create(name)
}

// removeCheckpoint removes the checkpoint of the segment starting at first,
// if there is one.
func (j *Journal) removeCheckpoint(first uint64) error {
	err := j.fs.Remove(join(j.opts.Dir, checkpointName(first)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// RecoveredState returns the newest state a StateCheckpoint hook stored in
// a checkpoint that Open found (and the seq it is as of), or nil if there
// is none (or Options.VerifyAll is set: the user then rebuilds its state
// from the records). Only seqs <= LastSeq() are returned: a state as of a
// seq that a repair cut off (RecoverTruncate) is dropped. The state is
// handed out once; later calls return nil.
func (j *Journal) RecoveredState() (seq uint64, state []byte) {
	j.ckptMu.Lock()
	defer j.ckptMu.Unlock()
	seq, state = j.recState, j.recStateBytes
	j.recState, j.recStateBytes = 0, nil
	return seq, state
}
