package poll

import (
	"fmt"

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
