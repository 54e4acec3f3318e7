package poll

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// AllowedCPUs returns the CPUs this process may run on.
func AllowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("poll: sched_getaffinity: %w", err)
	}
	var cpus []int
	for i := 0; i < len(set)*64; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus, nil
}

// CheckCPUs returns an error naming the first of cpus that this process
// cannot run on (it does not exist, or is outside the allowed set).
func CheckCPUs(cpus []int) error {
	allowed, err := AllowedCPUs()
	if err != nil {
		return err
	}
	ok := make(map[int]bool, len(allowed))
	for _, c := range allowed {
		ok[c] = true
	}
	for _, c := range cpus {
		if !ok[c] {
			return fmt.Errorf("poll: cpu %d does not exist or is not allowed (allowed: %v)", c, allowed)
		}
	}
	return nil
}

// PinThread pins the calling OS thread to cpu. The caller must have called
// runtime.LockOSThread, or the pin applies to whichever goroutine runs next.
func PinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("poll: pin to cpu %d: %w", cpu, err)
	}
	return nil
}

// Memory policies of set_mempolicy(2) (linux/mempolicy.h).
const (
	MemPolicyDefault = 0
	MemPolicyLocal   = 4 // MPOL_LOCAL: allocate on the node of the CPU that touches the page first
)

// LocalMemPolicy sets the calling thread's memory policy to MPOL_LOCAL
// (Linux >= 3.8): pages it touches first come from the node it runs on,
// whatever policy the process inherited (numactl --interleave, a bind).
// Call it on a locked, pinned thread; it affects only that thread.
func LocalMemPolicy() error {
	_, _, errno := unix.Syscall(unix.SYS_SET_MEMPOLICY, MemPolicyLocal, 0, 0)
	if errno != 0 {
		return fmt.Errorf("poll: set_mempolicy(MPOL_LOCAL): %w", errno)
	}
	return nil
}

// ThreadMemPolicy returns the calling thread's memory policy mode
// (get_mempolicy(2)).
func ThreadMemPolicy() (int, error) {
	var mode int32
	_, _, errno := unix.Syscall6(unix.SYS_GET_MEMPOLICY, uintptr(unsafe.Pointer(&mode)), 0, 0, 0, 0, 0)
	if errno != 0 {
		return 0, fmt.Errorf("poll: get_mempolicy: %w", errno)
	}
	return int(mode), nil
}

// CurrentCPU returns the CPU the calling thread runs on (getcpu(2)), or -1.
func CurrentCPU() int {
	var cpu uint32
	if _, _, errno := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0); errno != 0 {
		return -1
	}
	return int(cpu)
}
