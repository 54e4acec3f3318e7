package bench

import (
	"encoding/binary"
	"time"
)

// headerSize is the bench header at the start of every payload: the
// message's index in its publisher's sequence (uint64 LE) and the time it
// was due (ns since the run's epoch, int64 LE). The rest is filler.
const headerSize = 16

func putHeader(b []byte, idx uint64, due int64) {
	binary.LittleEndian.PutUint64(b[0:8], idx)
	binary.LittleEndian.PutUint64(b[8:16], uint64(due))
}

// readHeader returns the header of a payload; ok is false when it is too
// short to carry one.
func readHeader(b []byte) (idx uint64, due int64, ok bool) {
	if len(b) < headerSize {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[0:8]), int64(binary.LittleEndian.Uint64(b[8:16])), true
}

// newPayload returns a payload buffer of size bytes (at least headerSize)
// with a recognisable filler.
func newPayload(size int) []byte {
	if size < headerSize {
		size = headerSize
	}
	b := make([]byte, size)
	for i := headerSize; i < size; i++ {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// monoClock gives monotonic nanoseconds since the run started; publishers
// and subscribers live in the bench process, so they share it.
type monoClock struct{ t0 time.Time }

func (c monoClock) now() int64 { return int64(time.Since(c.t0)) }
