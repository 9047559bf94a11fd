package storage

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// TestSyncGroupCoversEveryWriteBeforeItsWait: 200 appends written at once share a few
// syncs, and every append's wait returns only after a sync that started once its bytes
// were written (what "durable when Append returns" needs).
func TestSyncGroupCoversEveryWriteBeforeItsWait(t *testing.T) {
	const n = 200
	var mu sync.Mutex
	written := make([]bool, n)
	synced := make([]bool, n)
	rounds := 0
	g := &syncGroup{do: func() error {
		mu.Lock()
		rounds++
		snap := append([]bool(nil), written...) // what this sync covers
		mu.Unlock()
		time.Sleep(5 * time.Millisecond) // the flush
		mu.Lock()
		for i, w := range snap {
			synced[i] = synced[i] || w
		}
		mu.Unlock()
		return nil
	}}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mu.Lock()
			written[i] = true
			mu.Unlock()
			if err := g.wait(); err != nil {
				t.Errorf("wait: %v", err)
			}
			mu.Lock()
			ok := synced[i]
			mu.Unlock()
			if !ok {
				t.Errorf("append %d: wait returned before a sync covering its write", i)
			}
		})
	}
	wg.Wait()
	if rounds > n/4 {
		t.Errorf("%d appends took %d syncs: the group does not share them", n, rounds)
	}
	t.Logf("%d concurrent appends, %d syncs", n, rounds)

	boom := errors.New("EIO")
	g = &syncGroup{do: func() error { return boom }}
	if err := g.wait(); !errors.Is(err, boom) {
		t.Errorf("wait after a failed sync = %v, want its error", err)
	}
}
