// Package logfile is the append-only file of CRC'd records that the
// client's file stores (FilePublishStore, FileBookmarkStore) are made of.
//
// Record layout, little-endian:
//
//	[len u32]   size of the whole record, these 8 header bytes included
//	[crc u32]   CRC-32C (Castagnoli) of body
//	[body]      len-8 bytes, at least 1, at most the reader's maxBody
//
// What a body holds is the store's business. A file is a sequence of
// records from offset 0.
//
// Reading (Scan) tells a torn tail from corruption:
//
//   - a bad record (a length out of bounds or past the end of the file, or
//     a CRC mismatch) with no valid record anywhere after it is a torn
//     tail: the process or machine died while appending. Scan reports its
//     offset and size (Result.Torn); the caller truncates it and says so.
//   - a bad record followed, at any later offset, by a valid one is
//     corruption: Scan fails with a *CorruptError naming the file, the bad
//     offset and the next valid offset. Nothing is truncated or rewritten.
//   - in repair mode Scan skips each corrupt region to the next valid
//     record and lists what it skipped (Result.Skipped), for the caller to
//     report exactly what a repair drops.
//
// "Valid" is a CRC match over a length that fits, so a valid-looking
// record inside a torn record's own bytes (a payload that embeds a store
// record) makes a torn tail look like corruption: Open then refuses rather
// than guesses, and a repair resolves it.
//
// A length is checked against maxBody and against the bytes left in the
// file before anything is allocated for it.
package logfile

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
)

// HeaderSize is the size of a record's header.
const HeaderSize = 8

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt matches every *CorruptError.
var ErrCorrupt = errors.New("corrupt store file")

// CorruptError is a bad record followed by a valid one.
type CorruptError struct {
	Path   string
	Offset int64 // the bad record
	Next   int64 // the next valid record after it
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: %v: bad record at offset %d (%s), valid record at offset %d after it (repair to drop bytes %d..%d)",
		e.Path, ErrCorrupt, e.Offset, e.Reason, e.Next, e.Offset, e.Next)
}

// Unwrap makes errors.Is(err, ErrCorrupt) work.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Region is a byte range of a file.
type Region struct{ Offset, Bytes int64 }

// Result is what Scan found besides the records.
type Result struct {
	// End is the end of the last valid record (the size to truncate to).
	End int64
	// Torn is the torn tail (Bytes 0: none).
	Torn Region
	// Skipped lists the corrupt regions skipped in repair mode.
	Skipped []Region
}

// Begin starts a record on dst: it reserves the header. Append the body,
// then call Finish with the returned start.
func Begin(dst []byte) ([]byte, int) {
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0), len(dst)
}

// Finish fills in the header of the record started at start.
func Finish(dst []byte, start int) []byte {
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[start+HeaderSize:], crcTable))
	return dst
}

// Scan reads the records of f (size bytes, named path in errors) and calls
// fn with each valid record's offset and body (valid only during the call).
// An error from fn stops the scan and is returned wrapped with the path
// and offset. See the package doc for torn tails, corruption and repair.
func Scan(f io.ReaderAt, size int64, path string, maxBody int, repair bool, fn func(off int64, body []byte) error) (Result, error) {
	var res Result
	var body []byte
	off := int64(0)
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), int(min(max(size, 4096), 1<<20)))
	var hdr [HeaderSize]byte
	for off < size {
		reason := ""
		if size-off < HeaderSize {
			reason = "short header"
		} else if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return res, fmt.Errorf("%s: offset %d: %w", path, off, err)
		} else {
			n := int64(binary.LittleEndian.Uint32(hdr[:]))
			switch {
			case n < HeaderSize+1 || n-HeaderSize > int64(maxBody):
				reason = fmt.Sprintf("length %d out of bounds", n)
			case off+n > size:
				reason = fmt.Sprintf("length %d past the end of the file", n)
			default:
				bl := int(n - HeaderSize)
				if cap(body) < bl {
					body = make([]byte, bl)
				}
				body = body[:bl]
				if _, err := io.ReadFull(r, body); err != nil {
					return res, fmt.Errorf("%s: offset %d: %w", path, off, err)
				}
				if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
					reason = "checksum mismatch"
				} else {
					if err := fn(off, body); err != nil {
						return res, fmt.Errorf("%s: record at offset %d: %w", path, off, err)
					}
					off += n
					res.End = off
					continue
				}
			}
		}
		next, err := findValid(f, size, off+1, maxBody)
		if err != nil {
			return res, fmt.Errorf("%s: offset %d: %w", path, off, err)
		}
		if next < 0 {
			res.Torn = Region{Offset: off, Bytes: size - off}
			return res, nil
		}
		if !repair {
			return res, &CorruptError{Path: path, Offset: off, Next: next, Reason: reason}
		}
		res.Skipped = append(res.Skipped, Region{Offset: off, Bytes: next - off})
		off = next
		r.Reset(io.NewSectionReader(f, off, size-off))
	}
	return res, nil
}

// findValid returns the first offset at or after from where a valid record
// starts, or -1.
func findValid(f io.ReaderAt, size, from int64, maxBody int) (int64, error) {
	win := int(min(64<<10, max(size-from, 0)))
	buf := make([]byte, win+HeaderSize)
	var body []byte
	for base := from; base+HeaderSize <= size; base += int64(win) {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-base)], base)
		if err != nil && !errors.Is(err, io.EOF) {
			return -1, err
		}
		for i := 0; i < win && i+HeaderSize <= n; i++ {
			at := base + int64(i)
			l := int64(binary.LittleEndian.Uint32(buf[i:]))
			if l < HeaderSize+1 || l-HeaderSize > int64(maxBody) || at+l > size {
				continue
			}
			bl := int(l - HeaderSize)
			if cap(body) < bl {
				body = make([]byte, bl)
			}
			body = body[:bl]
			if _, err := f.ReadAt(body, at+HeaderSize); err != nil && !errors.Is(err, io.EOF) {
				return -1, err
			}
			if crc32.Checksum(body, crcTable) == binary.LittleEndian.Uint32(buf[i+4:]) {
				return at, nil
			}
		}
	}
	return -1, nil
}

// Log appends to an open file at the offset it tracks. An append that fails
// is cut off again (Truncate) so that a later append does not land after a
// partial record; if that fails too, the Log is broken and refuses every
// later append.
type Log struct {
	f      File
	path   string
	size   int64
	broken error
}

// NewLog appends to f from offset size.
func NewLog(f File, path string, size int64) *Log { return &Log{f: f, path: path, size: size} }

// Size is the offset of the next append.
func (l *Log) Size() int64 { return l.size }

// Append writes p at the end.
func (l *Log) Append(p []byte) error {
	if l.broken != nil {
		return l.broken
	}
	if _, err := l.f.WriteAt(p, l.size); err != nil {
		if terr := l.f.Truncate(l.size); terr != nil {
			l.broken = fmt.Errorf("%s: append failed (%w) and cutting it off failed: %v", l.path, err, terr)
			return l.broken
		}
		return fmt.Errorf("%s: %w", l.path, err)
	}
	l.size += int64(len(p))
	return nil
}

// Sync syncs the file.
func (l *Log) Sync() error {
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("%s: sync: %w", l.path, err)
	}
	return nil
}

// Close closes the file.
func (l *Log) Close() error { return l.f.Close() }

type seqWriter struct {
	f   File
	off int64
}

func (w *seqWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

// Replace atomically replaces path with what write writes: a temporary file
// (path+".tmp", mode 0600) is written, synced, renamed over path, and the
// directory synced. It returns a Log appending to the new file.
func Replace(fsys FS, path string, write func(w io.Writer) error) (*Log, error) {
	tmp := path + ".tmp"
	f, err := fsys.Create(tmp)
	if err != nil {
		return nil, err
	}
	sw := &seqWriter{f: f}
	w := bufio.NewWriterSize(sw, 64<<10)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err == nil {
		err = fsys.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		fsys.Remove(tmp)
		return nil, err
	}
	return NewLog(f, path, sw.off), nil
}

// OpenExisting opens path and returns it with its size; a missing file returns
// a nil File and no error.
func OpenExisting(fsys FS, path string) (File, int64, error) {
	f, err := fsys.Open(path)
	if err != nil {
		if errors.Is(err, errNotExist) {
			return nil, 0, nil
		}
		return nil, 0, err
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, size, nil
}

// ReadExisting returns the whole file at path (what a repair works from);
// nil, false when it does not exist.
func ReadExisting(fsys FS, path string) ([]byte, bool, error) {
	f, size, err := OpenExisting(fsys, path)
	if err != nil || f == nil {
		return nil, false, err
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, true, fmt.Errorf("%s: %w", path, err)
	}
	return b, true, nil
}
