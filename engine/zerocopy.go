package engine

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

// Zero-copy deliveries (io_uring only).
//
// A delivered record is the stored record unchanged, so a large one need not
// be copied into the connection's send buffer: the pump appends the 8+8
// byte Deliver header to wbuf and notes that the record's bytes, a slice of
// the journal's segment mapping, follow at that offset (a zcPart). The send
// then gathers header bytes and mapping slices with one
// IORING_OP_SENDMSG_ZC: the kernel pins the pages and transmits from them.
//
// Lifetime. The kernel may read those pages, and the header bytes in sbuf,
// until the send's notification CQE, which comes after its result CQE (on
// a real NIC: once the peer acknowledged the data). So a send buffer that
// carried zero-copy parts is parked in a zcSlot with a journal.Hold on every
// segment its parts point into, and the connection sends on from another
// buffer; the slot is freed (holds released, buffer recycled) when every
// notification for it arrived. A connection has zcSlots slots: when all wait
// for notifications it stops sending until one arrives. A closed connection
// stays in uringIO.byID until its last notification, so neither its buffers
// nor its holds are released while the kernel can still read them; a Hold
// keeps a segment mapped even after retention deleted it or the journal
// closed.

// DefaultZeroCopyMin is the smallest record delivered zero-copy by default.
// Below it the copy into the send buffer is cheaper than pinning pages and
// waiting for a notification: BenchmarkReplayZeroCopy (loopback) has
// zero-copy at 0.45x the copy's throughput at 4 KiB, on par in CPU per GB
// from 16 KiB and ahead at 256 KiB.
const DefaultZeroCopyMin = 16 << 10

// zcSlots is how many zero-copy send buffers a connection may have waiting
// for notifications.
const zcSlots = 4

// maxIovecs bounds one sendmsg's gather list (the kernel's UIO_MAXIOV); a
// longer buffer goes out in several sends.
const maxIovecs = 1024

// zcPart is a record that goes out after wbuf[:at] (and any earlier parts),
// from data (in the journal mapping).
type zcPart struct {
	at   int
	data []byte
}

// zcRefs are the zero-copy parts of one send buffer and the holds on the
// segments they point into.
type zcRefs struct {
	parts []zcPart
	bytes int
	holds []journal.Hold
}

// add notes that rec, which cur just returned, follows the buffer's
// current end at. It reports whether it took a new hold.
func (z *zcRefs) add(at int, rec []byte, cur *journal.Cursor) bool {
	z.parts = append(z.parts, zcPart{at: at, data: rec})
	z.bytes += len(rec)
	if n := len(z.holds); n == 0 || !z.holds[n-1].Same(cur) {
		z.holds = append(z.holds, cur.Hold())
		return true
	}
	return false
}

// releaseHolds drops holds and returns how many it dropped.
func releaseHolds(holds []journal.Hold) int {
	for i := range holds {
		holds[i].Release()
		holds[i] = journal.Hold{}
	}
	return len(holds)
}

// release drops the holds and forgets the parts; it returns how many holds
// it dropped.
func (z *zcRefs) release() int {
	n := releaseHolds(z.holds)
	z.holds = z.holds[:0]
	z.parts = z.parts[:0]
	z.bytes = 0
	return n
}

// addZeroCopy appends a Deliver frame whose record goes out zero-copy.
func (c *conn) addZeroCopy(subID uint32, rec []byte, cur *journal.Cursor) {
	c.wbuf = wire.AppendDeliverHeader(c.wbuf, subID, len(rec))
	if c.wz.add(len(c.wbuf), rec, cur) {
		c.lp.zcHolds.Add(1)
	}
}

// zcSlot is a send buffer that went out zero-copy, kept until the kernel
// has notified it is done with it (and with the segments held).
type zcSlot struct {
	buf    []byte
	holds  []journal.Hold
	notifs int  // notification CQEs still to come
	inUse  bool // assigned to sbuf, or waiting for notifications
	sent   bool // every byte sent: free once notifs is 0
}

// zeroCopyMin is the record size from which this connection's deliveries go
// out zero-copy; 0: never.
func (c *conn) zeroCopyMin() int {
	if c.lp.ur == nil || c.zcCopied {
		return 0
	}
	return c.lp.ur.zcMin
}

// zcNotified handles a notification's report: if the kernel had to copy
// the data after all (loopback, a device without scatter-gather or
// checksum offload), zero-copy only added pinning and a notification to a
// copy, so the connection goes back to copying.
func (c *conn) zcNotified(copied bool) {
	if copied && !c.zcCopied && !c.lp.srv.cfg.zcEvenIfCopied {
		c.zcCopied = true
		c.lp.zcCopiedConns.Add(1)
	}
}

// stotal is the bytes of the send in progress: sbuf and its parts.
func (c *conn) stotal() int { return len(c.sbuf) + c.sz.bytes }

// freeSlot returns an unused zero-copy slot, or -1.
func (c *conn) freeSlot() int {
	for i := range c.zslots {
		if !c.zslots[i].inUse {
			return i
		}
	}
	return -1
}

// zcOutstanding reports whether the kernel may still read any of the
// connection's zero-copy buffers.
func (c *conn) zcOutstanding() bool {
	for i := range c.zslots {
		if c.zslots[i].notifs > 0 {
			return true
		}
	}
	return false
}

// zcSent parks sbuf, whose every byte was sent zero-copy from slot, until
// its notifications, and gives the connection the slot's idle buffer.
func (c *conn) zcSent(slot int) {
	s := &c.zslots[slot]
	s.buf, c.sbuf = c.sbuf, s.buf[:0]
	s.holds, c.sz.holds = c.sz.holds, s.holds[:0]
	c.sz.parts, c.sz.bytes = c.sz.parts[:0], 0
	c.soff = 0
	s.sent = true
	c.sslot = -1
	if s.notifs == 0 {
		c.zcFree(slot)
	}
}

// zcFree releases a slot whose buffer the kernel no longer reads.
func (c *conn) zcFree(slot int) {
	s := &c.zslots[slot]
	c.lp.zcHolds.Add(-int64(releaseHolds(s.holds)))
	s.holds = s.holds[:0]
	s.inUse, s.sent = false, false
}

// zcReleaseAll drops every hold the connection has; only once no operation
// on it is in flight and no notification is due.
func (c *conn) zcReleaseAll() {
	c.lp.zcHolds.Add(-int64(c.wz.release() + c.sz.release()))
	for i := range c.zslots {
		c.zcFree(i)
	}
}

// iovecs builds the gather list for the rest of the send in progress: sbuf
// interleaved with its parts, skipping the first skip bytes (already sent),
// at most maxIovecs entries.
func (c *conn) iovecs(skip int) []unix.Iovec {
	iovs := c.iovs[:0]
	add := func(b []byte) bool {
		if skip >= len(b) {
			skip -= len(b)
			return true
		}
		b = b[skip:]
		skip = 0
		if len(iovs) == maxIovecs {
			return false
		}
		iovs = append(iovs, unix.Iovec{Base: unsafe.SliceData(b)})
		iovs[len(iovs)-1].SetLen(len(b))
		return true
	}
	prev := 0
	for _, p := range c.sz.parts {
		if !add(c.sbuf[prev:p.at]) || !add(p.data) {
			c.iovs = iovs
			return iovs
		}
		prev = p.at
	}
	add(c.sbuf[prev:])
	c.iovs = iovs
	return iovs
}
