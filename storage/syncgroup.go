package storage

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// syncGroup makes the fragments appended by every camera durable together: an Append
// that has written its bytes joins the next round, and one syncfs(2) of the store's
// filesystem per round flushes them all with one device cache flush. A fsync per
// fragment per camera asked the disk for ~600 cache flushes a second at 600 cameras; the
// ingest goroutines waited in them and stopped reading their cameras, which dropped
// frames. An Append still returns only once its fragment is durable: a round starts
// after the bytes of every Append it covers were written.
type syncGroup struct {
	do func() error

	mu      sync.Mutex
	next    *syncRound // the round collecting waiters, not started yet
	running bool       // a goroutine is running rounds
}

type syncRound struct {
	done chan struct{}
	err  error
}

// wait returns once a sync that started after the call has finished, with its error.
func (g *syncGroup) wait() error {
	g.mu.Lock()
	if g.next == nil {
		g.next = &syncRound{done: make(chan struct{})}
	}
	r := g.next
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
	<-r.done
	return r.err
}

func (g *syncGroup) run() {
	for {
		g.mu.Lock()
		r := g.next
		g.next = nil
		if r == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		r.err = g.do()
		close(r.done)
	}
}

// syncfsOf returns a function that syncs the whole filesystem holding dir (syncfs(2):
// file data, metadata and one cache flush; since Linux 5.8 it reports writeback errors),
// and the directory handle it keeps open for that.
func syncfsOf(dir string) (func() error, *os.File, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	fd := int(d.Fd())
	return func() error {
		if err := unix.Syncfs(fd); err != nil {
			return fmt.Errorf("syncfs %s: %w", dir, err)
		}
		return nil
	}, d, nil
}
