package replicate

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tandemhq/tandem/internal/rsm"
	"github.com/tandemhq/tandem/record"
)

// Journal identity on a link. A source's stream is the records of one
// journal, named by the journal's id; a destination reports, in Resume,
// the position it holds of it (journal id, seq, CRC of the source's record
// at seq). The source checks it as raft's log matching does before it
// ships anything: see checkResume.

// resumeVerdict is what a source does with a destination's position
// (rsm.Verdict; the rule is rsm.CheckResume).
type resumeVerdict = rsm.Verdict

const (
	resumeAt        = rsm.ResumeAt
	resumeNewStream = rsm.ResumeNewStream
	resumeBehind    = rsm.ResumeBehind
	resumeFork      = rsm.ResumeFork
)

// checkResume decides where a source with journal self, holding source
// seqs [first, last] (last: durable), resumes a destination that reports
// pos: rsm.CheckResume.
func checkResume(self record.JournalID, pos position, first, last uint64, crcAt func(seq uint64) (uint32, error)) (from uint64, v resumeVerdict, reason string) {
	return rsm.CheckResume(self, pos, first, last, crcAt)
}

// ---- positions files ----
//
// StateDir holds, per peer, two small text files:
//
//	repl-in-PEER.pos    how far PEER's stream is durable here (a destination's
//	                    position of PEER's journal; what Resume reports)
//	repl-out-PEER.pos   how far PEER has acknowledged this instance's
//	                    journal (holds retention and acks across a restart)
//
// each holding one line:
//
//	v2 JOURNAL SEQ CRC
//
// JOURNAL: the journal id in 32 hex digits (the source's for "in", this
// instance's own for "out"); SEQ decimal; CRC 8 hex digits (0 in "out"
// files). A file of version 1 (a single decimal seq, no journal) reads as
// a position in an unknown journal: the stream restarts from the first
// retained record, and de-duplication drops what is already held. They are
// written atomically: a temporary file (mode 0600), fsync, rename, fsync
// of the directory. Only a name that passes ValidPeerName names a file
// (a file with another name is ignored).

// errPositionFile wraps a positions file that cannot be read.
var errPositionFile = errors.New("replicate: bad positions file")

func formatPosition(p position) string {
	return fmt.Sprintf("v2 %s %d %08x\n", hex.EncodeToString(p.Journal[:]), p.Seq, p.CRC)
}

func parsePosition(s string) (position, error) {
	f := strings.Fields(s)
	var p position
	switch {
	case len(f) == 1: // version 1: a seq alone
		seq, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return p, fmt.Errorf("%w: %q", errPositionFile, s)
		}
		// No journal id: matches no journal (unless the source's is zero).
		return position{Seq: seq}, nil
	case len(f) == 4 && f[0] == "v2":
		id, err := hex.DecodeString(f[1])
		if err != nil || len(id) != len(p.Journal) {
			return p, fmt.Errorf("%w: journal id %q", errPositionFile, f[1])
		}
		copy(p.Journal[:], id)
		if p.Seq, err = strconv.ParseUint(f[2], 10, 64); err != nil {
			return p, fmt.Errorf("%w: seq %q", errPositionFile, f[2])
		}
		crc, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil {
			return p, fmt.Errorf("%w: crc %q", errPositionFile, f[3])
		}
		p.CRC = uint32(crc)
		return p, nil
	}
	return p, fmt.Errorf("%w: %q", errPositionFile, s)
}

// writePositionFile replaces path with p, atomically and durably.
func writePositionFile(path string, p position) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("replicate: write %s: %w", tmp, err)
	}
	_, err = f.WriteString(formatPosition(p))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replicate: write %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("replicate: sync directory of %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("replicate: sync directory of %s: %w", path, err)
	}
	return nil
}

// readPositionFile reads path; ok is false when it does not exist.
func readPositionFile(path string) (p position, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return position{}, false, nil
	}
	if err != nil {
		return position{}, false, fmt.Errorf("replicate: read %s: %w", path, err)
	}
	p, err = parsePosition(string(b))
	if err != nil {
		return position{}, false, fmt.Errorf("%s: %w", path, err)
	}
	return p, true, nil
}

// PositionFile is the file in stateDir holding how far peer's stream is
// durable on this instance (what `tandem repl-reset` deletes).
func PositionFile(stateDir, peer string) string {
	return filepath.Join(stateDir, "repl-in-"+peer+".pos")
}

// ResetPeer deletes this instance's position of peer's stream (in
// stateDir, with the instance stopped), so the next link with peer
// restarts that stream from peer's first retained record: what resolves a
// fork. De-duplication on (publisher, publisher sequence) keeps every
// message it already holds exactly once. It reports whether there was a
// position to delete.
func ResetPeer(stateDir, peer string) (bool, error) {
	if err := ValidPeerName(peer); err != nil {
		return false, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	path := PositionFile(stateDir, peer)
	if _, ok, err := readPositionFile(path); err == nil && !ok {
		return false, nil
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("replicate: reset %s: %w", peer, err)
	}
	d, err := os.Open(stateDir)
	if err != nil {
		return true, fmt.Errorf("replicate: reset %s: %w", peer, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return true, fmt.Errorf("replicate: reset %s: %w", peer, err)
	}
	return true, nil
}
