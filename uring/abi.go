package uring

import "unsafe"

// This file is the kernel ABI (include/uapi/linux/io_uring.h): the values
// and layouts below are fixed by the kernel and must not change.

// Op is an io_uring opcode (enum io_uring_op).
type Op uint8

// Opcodes used or probed by Tandem. The numbering is the kernel's.
const (
	OpNop          Op = 0
	OpReadv        Op = 1
	OpWritev       Op = 2
	OpFsync        Op = 3
	OpPollAdd      Op = 6
	OpPollRemove   Op = 7
	OpSendmsg      Op = 9
	OpRecvmsg      Op = 10
	OpTimeout      Op = 11
	OpTimeoutRem   Op = 12
	OpAccept       Op = 13
	OpAsyncCancel  Op = 14
	OpLinkTimeout  Op = 15
	OpConnect      Op = 16
	OpClose        Op = 19
	OpRead         Op = 22
	OpWrite        Op = 23
	OpSend         Op = 26
	OpRecv         Op = 27
	OpShutdown     Op = 34
	OpMsgRing      Op = 40
	OpSendZC       Op = 47
	OpSendmsgZC    Op = 48
	opLastKnown    Op = 48
	probeOpsMaxLen    = 256
)

var opNames = [...]string{
	OpNop: "NOP", OpReadv: "READV", OpWritev: "WRITEV", OpFsync: "FSYNC",
	OpPollAdd: "POLL_ADD", OpPollRemove: "POLL_REMOVE", OpSendmsg: "SENDMSG",
	OpRecvmsg: "RECVMSG", OpTimeout: "TIMEOUT", OpTimeoutRem: "TIMEOUT_REMOVE",
	OpAccept: "ACCEPT", OpAsyncCancel: "ASYNC_CANCEL", OpLinkTimeout: "LINK_TIMEOUT",
	OpConnect: "CONNECT", OpClose: "CLOSE", OpRead: "READ", OpWrite: "WRITE",
	OpSend: "SEND", OpRecv: "RECV", OpShutdown: "SHUTDOWN", OpMsgRing: "MSG_RING",
	OpSendZC: "SEND_ZC", OpSendmsgZC: "SENDMSG_ZC",
}

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return "OP_" + itoa(int(o))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// io_uring_setup flags.
const (
	setupCQSize       = 1 << 3
	setupClamp        = 1 << 4
	setupSubmitAll    = 1 << 7
	setupCoopTaskrun  = 1 << 8
	setupTaskrunFlag  = 1 << 9
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13
)

// Features reported by io_uring_setup (io_uring_params.features).
const (
	FeatSingleMmap   = 1 << 0
	FeatNoDrop       = 1 << 1
	FeatSubmitStable = 1 << 2
	FeatFastPoll     = 1 << 5
	FeatExtArg       = 1 << 8
	FeatNativeWorker = 1 << 9
)

// mmap offsets of the three regions.
const (
	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

// io_uring_enter flags.
const (
	enterGetEvents = 1 << 0
	enterExtArg    = 1 << 3
)

// Flags the kernel sets in the SQ ring's flags word.
const (
	sqNeedWakeup = 1 << 0
	sqCQOverflow = 1 << 1
	sqTaskrun    = 1 << 2
)

// SQE flags (io_uring_sqe.flags).
const (
	SQEFixedFile      = 1 << 0
	SQEIODrain        = 1 << 1
	SQEIOLink         = 1 << 2
	SQEIOHardlink     = 1 << 3
	SQEAsync          = 1 << 4
	SQECQESkipSuccess = 1 << 6
)

// CQE flags (io_uring_cqe.flags).
const (
	CQEFBuffer       = 1 << 0
	CQEFMore         = 1 << 1 // more CQEs will follow for this request
	CQEFSockNonempty = 1 << 2
	CQEFNotif        = 1 << 3 // a SEND_ZC notification: the kernel is done with the buffer
)

// Per-op flags.
const (
	fsyncDatasync = 1 << 0

	timeoutAbs = 1 << 0

	pollAddMulti = 1 << 0

	cancelAll    = 1 << 0
	cancelFd     = 1 << 1
	cancelAny    = 1 << 2
	cancelUserID = 1 << 4

	acceptMultishot = 1 << 0

	recvsendPollFirst  = 1 << 0
	sendZCReportUsage  = 1 << 3
	notifUsageZCCopied = 1 << 31
	msgRingData        = 0
	msgRingFlagsPass   = 1 << 1
)

// io_uring_register opcodes.
const (
	registerEventfd   = 4
	unregisterEventfd = 5
	registerProbe     = 8
)

const probeOpSupported = 1 << 0

// sqringOffsets is struct io_sqring_offsets.
type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

// cqringOffsets is struct io_cqring_offsets.
type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// SQE is struct io_uring_sqe (64 bytes). The Prep methods fill one
// completely; set Flags afterwards to link or drain.
type SQE struct {
	Opcode      Op
	Flags       uint8
	IoPrio      uint16
	Fd          int32
	Off         uint64 // also addr2
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags, poll32_events, msg_flags, timeout_flags, accept_flags, cancel_flags, ...
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   int32 // splice_fd_in, file_index, addr_len
	Addr3       uint64
	pad         uint64
}

// CQE is struct io_uring_cqe (16 bytes), copied out of the ring by value.
type CQE struct {
	UserData uint64
	Res      int32 // result, or -errno
	Flags    uint32
}

// getEventsArg is struct io_uring_getevents_arg (IORING_ENTER_EXT_ARG).
type getEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

// probeHeader is struct io_uring_probe without its flexible ops array; each
// op is struct io_uring_probe_op {u8 op, resv; u16 flags; u32 resv2}.
type probeHeader struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
}

// Layout checks: a wrong size here would corrupt the kernel's view.
var (
	_ [64]struct{}  = [unsafe.Sizeof(SQE{})]struct{}{}
	_ [16]struct{}  = [unsafe.Sizeof(CQE{})]struct{}{}
	_ [120]struct{} = [unsafe.Sizeof(params{})]struct{}{}
	_ [24]struct{}  = [unsafe.Sizeof(getEventsArg{})]struct{}{}
	_ [16]struct{}  = [unsafe.Sizeof(probeHeader{})]struct{}{}
)
