package tuning

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrBadCPUList is wrapped by every cpulist parse error.
var ErrBadCPUList = errors.New("tuning: bad cpu list")

// maxCPU bounds the CPU numbers we accept (the kernel's NR_CPUS limit is
// 8192), so a corrupt file cannot make us allocate without bound.
const maxCPU = 1 << 13

// ParseCPUList parses the kernel's cpulist format ("0-3,8-11", "5", "" for
// none; the trailing newline of a sysfs file is allowed) into sorted,
// distinct CPU numbers.
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := parseCPU(lo)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %q: %w", ErrBadCPUList, s, part, err)
		}
		last := first
		if isRange {
			if last, err = parseCPU(hi); err != nil {
				return nil, fmt.Errorf("%w %q: %q: %w", ErrBadCPUList, s, part, err)
			}
			if last < first {
				return nil, fmt.Errorf("%w %q: range %q runs backwards", ErrBadCPUList, s, part)
			}
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

func parseCPU(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty cpu number")
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%q is not a cpu number", s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n >= maxCPU {
		return 0, fmt.Errorf("cpu %q out of range (0..%d)", s, maxCPU-1)
	}
	return n, nil
}

// FormatCPUList writes cpus in cpulist form with ranges ("0-3,8").
func FormatCPUList(cpus []int) string {
	c := slices.Clone(cpus)
	slices.Sort(c)
	c = slices.Compact(c)
	var b strings.Builder
	for i := 0; i < len(c); {
		j := i
		for j+1 < len(c) && c[j+1] == c[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(c[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(c[j]))
		}
		i = j + 1
	}
	return b.String()
}

// joinCPUs writes cpus comma-separated without ranges: the form of the
// serve config's `cpus` key.
func joinCPUs(cpus []int) string {
	parts := make([]string, len(cpus))
	for i, c := range cpus {
		parts[i] = strconv.Itoa(c)
	}
	return strings.Join(parts, ",")
}
