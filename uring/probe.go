package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Probe says which opcodes the running kernel supports
// (IORING_REGISTER_PROBE, Linux >= 5.6).
type Probe struct {
	lastOp Op
	flags  [probeOpsMaxLen]uint16
}

// Probe asks the kernel which opcodes it supports.
func (r *Ring) Probe() (*Probe, error) {
	if r.fd < 0 {
		return nil, ErrClosed
	}
	buf := make([]byte, int(unsafe.Sizeof(probeHeader{}))+probeOpsMaxLen*8)
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerProbe,
		uintptr(unsafe.Pointer(&buf[0])), probeOpsMaxLen, 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("uring: register probe: %w", errno)
	}
	hdr := (*probeHeader)(unsafe.Pointer(&buf[0]))
	p := &Probe{lastOp: Op(hdr.lastOp)}
	ops := buf[unsafe.Sizeof(probeHeader{}):]
	for i := 0; i < int(hdr.opsLen); i++ {
		o := ops[i*8:]
		p.flags[o[0]] = uint16(o[2]) | uint16(o[3])<<8
	}
	return p, nil
}

// Supports reports whether the kernel implements op.
func (p *Probe) Supports(op Op) bool {
	return op <= p.lastOp && p.flags[op]&probeOpSupported != 0
}

// LastOp is the highest opcode the kernel knows.
func (p *Probe) LastOp() Op { return p.lastOp }

// Missing returns those of ops the kernel does not support.
func (p *Probe) Missing(ops ...Op) []Op {
	var out []Op
	for _, o := range ops {
		if !p.Supports(o) {
			out = append(out, o)
		}
	}
	return out
}

// RequiredOps are the operations Tandem's io_uring engine cannot do
// without; SendZC and the multishot variants are used when present.
var RequiredOps = []Op{OpNop, OpRead, OpWrite, OpWritev, OpFsync, OpPollAdd,
	OpAccept, OpRecv, OpSend, OpAsyncCancel, OpClose, OpTimeout}

// requiredFeatures are the setup features the ring layer relies on.
var requiredFeatures = []struct {
	bit  uint32
	name string
}{
	{FeatNoDrop, "IORING_FEAT_NODROP (5.5)"},
	{FeatSubmitStable, "IORING_FEAT_SUBMIT_STABLE (5.5)"},
	{FeatFastPoll, "IORING_FEAT_FAST_POLL (5.7)"},
	{FeatExtArg, "IORING_FEAT_EXT_ARG (5.11)"},
}

// ErrUnavailable wraps every reason Available gives.
var ErrUnavailable = errors.New("uring: io_uring unavailable")

// Available sets up and tears down a one-entry ring, probes the features
// and operations Tandem needs, and returns nil, or an error wrapping
// ErrUnavailable (and the errno) that says why, in words an operator can
// act on: the engine's `--engine auto` logs it and falls back to epoll.
func Available() error {
	var p params
	fd, err := setup(1, &p)
	if err != nil {
		var errno unix.Errno
		errors.As(err, &errno)
		disabled, _ := os.ReadFile("/proc/sys/kernel/io_uring_disabled")
		group, _ := os.ReadFile("/proc/sys/kernel/io_uring_group")
		return fmt.Errorf("%w: %s: %w", ErrUnavailable,
			unavailableReason(errno, strings.TrimSpace(string(disabled)), strings.TrimSpace(string(group))), errno)
	}
	unix.Close(fd)
	var missing []string
	for _, f := range requiredFeatures {
		if p.features&f.bit == 0 {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: kernel lacks %s", ErrUnavailable, strings.Join(missing, ", "))
	}
	r, err := New(Options{Entries: 2})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer r.Close()
	pr, err := r.Probe()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if m := pr.Missing(RequiredOps...); len(m) > 0 {
		return fmt.Errorf("%w: kernel lacks operations %v", ErrUnavailable, m)
	}
	return nil
}

// unavailableReason explains an io_uring_setup failure. disabled and group
// are the contents of /proc/sys/kernel/io_uring_disabled and io_uring_group
// ("" when absent).
func unavailableReason(errno unix.Errno, disabled, group string) string {
	switch errno {
	case unix.ENOSYS:
		return "io_uring_setup is not implemented: a kernel older than 5.1 or built without CONFIG_IO_URING, " +
			"or a seccomp filter that answers ENOSYS (container runtimes' default profiles block io_uring)"
	case unix.EPERM, unix.EACCES:
		switch disabled {
		case "2":
			return "io_uring is disabled for every process by sysctl kernel.io_uring_disabled=2"
		case "1":
			g := "kernel.io_uring_group"
			if group != "" && group != "-1" {
				g += " (gid " + group + ")"
			}
			return "sysctl kernel.io_uring_disabled=1 allows io_uring only to processes with CAP_SYS_ADMIN or in " + g
		}
		return "io_uring_setup was denied by a seccomp filter or a security module (SELinux, AppArmor)"
	case unix.ENOMEM:
		return "not enough locked memory for the rings (kernels before 5.12 charge them to RLIMIT_MEMLOCK: raise `ulimit -l`)"
	case unix.EMFILE, unix.ENFILE:
		return "out of file descriptors"
	case unix.EINVAL:
		return "the kernel rejected the setup parameters (a kernel too old for this ring layer)"
	}
	return "io_uring_setup failed"
}
