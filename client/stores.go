package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tandemhq/tandem/client/internal/logfile"
)

// StoreFS is the file-system seam of the file stores (FilePublishStore,
// FileBookmarkStore): the OS by default, another implementation (a crash
// simulator's) with WithStoreFS. Names are full paths.
type StoreFS = logfile.FS

// StoreFile is one open file of a StoreFS.
type StoreFile = logfile.File

// StoreOption configures a file store.
type StoreOption func(*storeOptions)

type storeOptions struct{ fs StoreFS }

// WithStoreFS makes a file store use fsys instead of the OS.
func WithStoreFS(fsys StoreFS) StoreOption {
	return func(o *storeOptions) {
		if fsys != nil {
			o.fs = fsys
		}
	}
}

func storeOpts(opts []StoreOption) storeOptions {
	o := storeOptions{fs: logfile.OSFS{}}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// ErrStoreCorrupt matches the error of opening a store file with a bad
// record followed by valid ones (corruption, not a torn write). The error
// names the file and the offset; repair with RepairFilePublishStore or
// RepairFileBookmarkStore (tandem pub/sub --repair-store).
var ErrStoreCorrupt = logfile.ErrCorrupt

// ErrTornTail matches the report (through OnError) of a torn tail dropped
// when a store file was opened.
var ErrTornTail = errors.New("torn tail dropped")

// StoreRecovery is what opening a file store found.
type StoreRecovery struct {
	Path string
	// Torn is the torn tail dropped: the bytes of an append the process or
	// machine did not finish (Bytes 0: none).
	Torn logfile.Region
}

// Err returns nil if nothing was dropped, else an error matching
// ErrTornTail naming the file, offset and size.
func (r StoreRecovery) Err() error {
	if r.Torn.Bytes == 0 {
		return nil
	}
	return fmt.Errorf("client: store %s: %w: %d bytes at offset %d (an unfinished append)", r.Path, ErrTornTail, r.Torn.Bytes, r.Torn.Offset)
}

// DroppedRegion is a corrupt region a repair dropped.
type DroppedRegion struct {
	Offset, Bytes int64
	// After and Before are the sequences (publish store: publisher
	// sequences) of the valid records just before and just after the
	// region (0: none): records between them that were in the region are
	// lost.
	After, Before uint64
}

// StoreRepair is what a repair dropped.
type StoreRepair struct {
	Path    string
	Dropped []DroppedRegion
	Torn    logfile.Region
	// Backup is the copy of the original file ("" if nothing was dropped).
	Backup string
	// Messages (publish store) or Subscriptions (bookmark store) kept.
	Messages      int
	Subscriptions int
}

// Clean reports whether the repair found nothing to drop.
func (r StoreRepair) Clean() bool { return len(r.Dropped) == 0 && r.Torn.Bytes == 0 }

// String describes the repair, one line per dropped region.
func (r StoreRepair) String() string {
	if r.Clean() {
		return fmt.Sprintf("%s: nothing to repair", r.Path)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: repaired (original kept as %s):", r.Path, r.Backup)
	for _, d := range r.Dropped {
		fmt.Fprintf(&b, "\n  dropped %d corrupt bytes at offset %d (between records with sequence %d and %d)", d.Bytes, d.Offset, d.After, d.Before)
	}
	if r.Torn.Bytes > 0 {
		fmt.Fprintf(&b, "\n  dropped a %d-byte torn tail at offset %d", r.Torn.Bytes, r.Torn.Offset)
	}
	return b.String()
}

// keepCorrupt writes orig to path+".corrupt" (synced) before a repair
// replaces path.
func keepCorrupt(fsys StoreFS, path string, orig []byte) error {
	_, err := logfile.Replace(fsys, path+".corrupt", func(w io.Writer) error {
		_, err := w.Write(orig)
		return err
	})
	return err
}

func bytesReaderAt(b []byte) io.ReaderAt { return bytes.NewReader(b) }

// recoverer is a store that reports what its open found.
type recoverer interface{ Recovery() StoreRecovery }

// storeRecoveryErrors returns the torn-tail reports of the configured
// stores, for OnError.
func storeRecoveryErrors(stores ...any) []error {
	var out []error
	for _, s := range stores {
		if r, ok := s.(recoverer); ok {
			if err := r.Recovery().Err(); err != nil {
				out = append(out, err)
			}
		}
	}
	return out
}

// checkFirst refuses a file whose very first record is bad: store files are
// created whole (written, synced, renamed into place), so their first
// record cannot be torn; it is another kind of file, an earlier format, or
// damage.
func checkFirst(path string, res logfile.Result) error {
	if res.Torn.Bytes > 0 && res.Torn.Offset == 0 {
		return fmt.Errorf("%s: %w: bad record at offset 0 and nothing valid after it (not a store file of this version, or damaged)", path, ErrStoreCorrupt)
	}
	return nil
}
