package cluster_test

import (
	"testing"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/cluster/clustertest"
	"github.com/vigie-vms/vigie/model"
)

// TestFullDiskCamerasMoveAndComeBack: a node whose disk report turns full hands its
// cameras to the other nodes make-before-break (no camera is ever without an owner, each
// moves with exactly one epoch increment), stays active, and gets cameras again once it
// reports free space.
func TestFullDiskCamerasMoveAndComeBack(t *testing.T) {
	h := clustertest.New(t, 3, clustertest.Options{AutoConfirm: true, ConfirmDelay: 200 * time.Millisecond})
	ld := h.Leader()
	ctx := h.Ctx()
	ids := mustTenantCams(t, ld.C, 12)
	h.Eventually(10*time.Second, "every camera owned", func() bool { return allOwned(assignments(t, ld.C), len(ids)) })
	full, mine := followerOwner(t, h)

	stop := make(chan struct{})
	problems := watchOwnership(t, ld.C, stop)
	// the report comes from the full node itself (forwarded to the leader)
	if err := full.C.ReportDisk(ctx, full.ID, cluster.DiskUsage{FreeBytes: 1 << 20, TotalBytes: 1 << 30, Full: true}); err != nil {
		t.Fatal(err)
	}
	h.Eventually(15*time.Second, "the full node's cameras handed over", func() bool {
		as := assignments(t, ld.C)
		for id, old := range mine {
			a := as[id]
			if a.Node == full.ID || a.Next != "" {
				return false
			}
			if a.Epoch != old.Epoch+1 {
				t.Fatalf("camera %s moved with epoch %d, want %d (one handover)", id, a.Epoch, old.Epoch+1)
			}
		}
		return true
	})
	close(stop)
	if p, ok := <-problems; ok {
		t.Fatal(p)
	}
	for _, m := range ld.C.Members() {
		if m.ID == full.ID && (m.State != model.NodeActive || m.Cameras != 0) {
			t.Fatalf("full node: %+v, want active (admin state untouched) with no camera", m)
		}
	}
	// space again: it records again (a report forwarded like the first)
	if err := full.C.ReportDisk(ctx, full.ID, cluster.DiskUsage{FreeBytes: 600 << 20, TotalBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	h.Eventually(15*time.Second, "cameras back on the node with space", func() bool {
		n := 0
		for _, a := range assignments(t, ld.C) {
			if a.Node == full.ID && a.Next == "" {
				n++
			}
		}
		return n >= len(ids)/3-1
	})
}
