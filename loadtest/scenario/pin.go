package scenario

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// pinSelf pins every thread of this process to cpus and sets GOMAXPROCS to their number;
// threads created later inherit the affinity of the thread that creates them, which is
// pinned too. The returned func gives every CPU back and restores GOMAXPROCS.
func pinSelf(cpus []int) (restore func(), err error) {
	var set, all unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	for c := range runtime.NumCPU() {
		all.Set(c)
	}
	prev := runtime.GOMAXPROCS(len(cpus))
	if err := setAll(&set); err != nil {
		runtime.GOMAXPROCS(prev)
		_ = setAll(&all)
		return func() {}, err
	}
	return func() {
		_ = setAll(&all)
		runtime.GOMAXPROCS(prev)
	}, nil
}

// setAll sets the affinity of every thread of the process (twice: a thread created while
// the first pass ran is caught by the second).
func setAll(set *unix.CPUSet) error {
	for range 2 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("pin: %w", err)
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pin thread %d: %w", tid, err)
			}
		}
	}
	return nil
}
