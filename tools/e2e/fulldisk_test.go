package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/node/clustertest"
	"github.com/vigie-vms/vigie/storage"
)

// TestFullDisk runs 3 `vigie node` processes, the third with its data directory on a
// small tmpfs (the storage reserve, storage.DefaultMinFreeBytes = 1 GiB, plus 192 MiB),
// and 9 simulated cameras. Then, on that node's file system:
//
//  1. a filler file takes it below the reserve (recording still works there): the node
//     reports a full disk, the leader logs the alert and hands its cameras to the other
//     nodes make-before-break; the footage of those cameras across the move has no hole;
//  2. the filler grows until ENOSPC: the node keeps running and answering, the other
//     nodes keep recording every camera (their timelines grow);
//  3. the filler is deleted: the node reports free space and records cameras again.
//
// Finally every segment the catalog lists for the cameras that were on the node exports
// and parses, and an export of each of them over the whole test decodes without error.
// Needs root (mount -t tmpfs): skipped otherwise, except under CI=true where it fails.
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: 3 node processes and a tmpfs, ~90 s")
	}
	needTools(t, "ffmpeg", "ffprobe", "mount", "umount")
	const reserve = storage.DefaultMinFreeBytes
	mnt := fdMountTmpfs(t, reserve>>20+192)

	var ids []string
	for i := range 9 {
		ids = append(ids, fmt.Sprintf("fd-cam-%d", i+1))
	}
	sim := startSimcam(t, ids...)
	key := writeSecretKey(t)
	nodes := fdStartCluster(t, key, []string{t.TempDir(), t.TempDir(), mnt}, "--segment-max-age", "10s", "--log-level", "info")
	full, others := nodes[2], nodes[:2]
	fdWaitVoters(t, nodes[0].base(), 3, 30*time.Second)

	createTenant(t, nodes[0].base(), "t1")
	begin := time.Now()
	for _, id := range ids {
		createCamera(t, nodes[0].base(), map[string]any{"id": id, "tenant": "t1", "url": sim.URL(id)})
	}
	waitAllRecording(t, nodes[0].base(), ids, 60*time.Second)
	var mine []string
	fdEventually(t, 20*time.Second, "the tmpfs node records cameras", func() bool {
		mine = fdRecording(t, full)
		return len(mine) > 0
	})
	free, total := fdStatfs(t, mnt)
	t.Logf("cameras recording %s after registration; %s records %v; its disk: %d MiB free of %d MiB (reserve %d MiB)",
		time.Since(begin).Round(time.Millisecond), full.id, mine, free>>20, total>>20, reserve>>20)
	time.Sleep(5 * time.Second) // footage on the node before its disk fills

	// 1. Below the reserve: the node still records, but reports a full disk.
	filler := filepath.Join(mnt, "filler")
	wrote, err := fdFill(filler, free-(reserve-64<<20))
	if err != nil {
		t.Fatalf("fill %s below the reserve: %v", mnt, err)
	}
	filledAt := time.Now()
	free, _ = fdStatfs(t, mnt)
	t.Logf("phase 1: wrote %d MiB of filler: %d MiB free, below the %d MiB reserve", wrote>>20, free>>20, reserve>>20)
	alert := fdWaitLog(t, nodes, "leader: node disk full", "peer="+full.id, 30*time.Second)
	alertAt := time.Now()
	t.Logf("phase 1: alert after %s: %s", alertAt.Sub(filledAt).Round(time.Millisecond), alert)
	fdEventually(t, 60*time.Second, "the full node's cameras recorded elsewhere", func() bool {
		return len(fdRecording(t, full)) == 0
	})
	waitAllRecording(t, others[0].base(), ids, 30*time.Second)
	movedAt := time.Now()
	t.Logf("phase 1: %d cameras moved off %s %s after the fill (%s after the alert)", len(mine), full.id,
		movedAt.Sub(filledAt).Round(time.Millisecond), movedAt.Sub(alertAt).Round(time.Millisecond))
	metric, status := fdDiskShown(t, full, others[0].base())
	t.Logf("phase 1: %s's vigie_disk_full metric: %s; its disk in the cluster status: %s", full.id, metric, status)
	if metric != "1" || status != "full" {
		t.Errorf("the full node is not shown full (the alert): metric vigie_disk_full %s, cluster status %s; want 1 and full", metric, status)
	}
	for _, n := range getClusterStatus(t, others[0].base()).Nodes {
		if n.ID == full.id && (n.State != "active" || n.Cameras != 0) {
			t.Errorf("the full node in the cluster status: state %q, %d cameras; want active (its admin state is not touched) and 0 cameras", n.State, n.Cameras)
		}
	}

	// 2. ENOSPC: nothing more fits on the node's file system.
	more, err := fdFill(filler, -1)
	if err != nil {
		t.Fatalf("fill %s up to ENOSPC: %v", mnt, err)
	}
	enospcAt := time.Now()
	free, _ = fdStatfs(t, mnt)
	t.Logf("phase 2: wrote %d MiB more filler until ENOSPC: %d bytes free", more>>20, free)
	select {
	case <-full.done:
		t.Fatalf("%s exited on a full disk: %v", full.id, full.err)
	case <-time.After(15 * time.Second): // a disk report and about 15 catalog commits
	}
	code, _ := do(t, "GET", full.base()+"/v1/cluster/status", nil)
	if code != http.StatusOK {
		t.Errorf("the full node answers GET /v1/cluster/status with %d", code)
	}
	waitAllRecording(t, others[0].base(), ids, 10*time.Second)
	for _, id := range mine {
		tl := waitSpan(t, others[0].base(), id, begin.Add(-time.Minute), enospcAt.Add(5*time.Second), 30*time.Second)
		last := tl.Spans[len(tl.Spans)-1]
		t.Logf("phase 2: camera %s recorded elsewhere up to %s (%.1fs after ENOSPC)", id, last.End.Format("15:04:05"), last.End.Sub(enospcAt).Seconds())
	}
	if errs := full.logLines("level=ERROR"); len(errs) > 0 {
		t.Logf("phase 2: %s logged %d errors; the last ones:\n%s", full.id, len(errs), strings.Join(errs[max(0, len(errs)-5):], "\n"))
	}

	// 3. Space again: the node says so and records cameras again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	free, _ = fdStatfs(t, mnt)
	t.Logf("phase 3: filler deleted: %d MiB free", free>>20)
	back := fdWaitLog(t, nodes, "leader: node disk has free space again", "peer="+full.id, 30*time.Second)
	t.Logf("phase 3: %s after the delete: %s", time.Since(freedAt).Round(time.Millisecond), back)
	var again []string
	fdEventually(t, 60*time.Second, "the node records cameras again", func() bool {
		again = fdRecording(t, full)
		return len(again) > 0
	})
	t.Logf("phase 3: %s records %v again %s after the delete", full.id, again, time.Since(freedAt).Round(time.Millisecond))
	if metric, status := fdDiskShown(t, full, others[0].base()); metric != "0" || status != "not full" {
		t.Errorf("the node with free space again is still shown full: metric vigie_disk_full %s, cluster status %s", metric, status)
	}
	select {
	case <-full.done:
		t.Fatalf("%s exited: %v", full.id, full.err)
	default:
	}

	// No corrupt footage: every segment listed for the cameras that were on the node
	// exports and parses; the handover of phase 1 lost no frame; a whole export decodes.
	time.Sleep(11 * time.Second) // what was open when the node came back is sealed
	end := time.Now()
	segs, bad := 0, 0
	for _, id := range mine {
		for _, s := range listSegments(t, others[1].base(), id, begin.Add(-time.Minute), end) {
			if !s.Sealed {
				continue
			}
			segs++
			c, err := exportFrames(others[1].base(), id, s.Start, s.End)
			if err != nil || c.Frames == 0 {
				bad++
				t.Errorf("camera %s segment %s (%s → %s, %s bytes): export %s, %v", id, s.ID, s.Start.Format("15:04:05.000"), s.End.Format("15:04:05.000"), s.Bytes, c, err)
			}
		}
		// the handover off the full node: every frame once, and a clean decode
		dir := t.TempDir()
		win := filepath.Join(dir, id+"-handover.mp4")
		export(t, others[1].base(), id, filledAt.Add(-5*time.Second), movedAt.Add(5*time.Second), win)
		frames, dups := fdFrames(t, win)
		c := clustertest.Cover(fdUnique(frames))
		switch {
		case c.Missing > 0 || len(dups) > 0:
			t.Errorf("camera %s: the make-before-break handover off the full node: %s; frames repeated or backwards: %v", id, c, dups)
		default:
			t.Logf("camera %s across the handover off the full node: %s", id, c)
		}
		if msg := decodeErrors(t, win); msg != "" {
			t.Errorf("camera %s: export across the handover off the full node: ffmpeg -v error: %s; samples of at most 1 ms: %v",
				id, tail(msg, 5), fdTinySamples(t, win))
		}
		// the whole test, including the handover back onto the node
		all := filepath.Join(dir, id+".mp4")
		export(t, others[1].base(), id, begin.Add(-time.Minute), end, all)
		frames, dups = fdFrames(t, all)
		c = clustertest.Cover(fdUnique(frames))
		if c.Missing > 0 {
			var where []string
			for _, h := range c.Holes {
				from, _ := sim.FrameTime(id, h.After)
				where = append(where, fmt.Sprintf("%d..%d at %s (fill %+.1fs, ENOSPC %+.1fs, delete %+.1fs)", h.After, h.Before,
					from.Format("15:04:05.000"), from.Sub(filledAt).Seconds(), from.Sub(enospcAt).Seconds(), from.Sub(freedAt).Seconds()))
			}
			t.Logf("camera %s, whole test: %s; holes: %s", id, c, strings.Join(where, "; "))
		}
		if len(dups) > 0 {
			t.Errorf("camera %s: export of the whole test (%s): frames repeated or backwards %v", id, c, dups)
		}
		if msg := decodeErrors(t, all); msg != "" {
			t.Errorf("camera %s: export of the whole test: ffmpeg -v error: %s; samples of at most 1 ms: %v",
				id, tail(msg, 5), fdTinySamples(t, all))
		}
	}
	t.Logf("%d sealed segments of %d cameras checked, %d unreadable", segs, len(mine), bad)
	for _, n := range nodes {
		for _, l := range n.logLines("entering leader state") {
			t.Logf("%s became the leader: %s", n.id, l)
		}
		if dir := os.Getenv("VIGIE_E2E_LOGDIR"); dir != "" {
			if err := os.WriteFile(filepath.Join(dir, "fulldisk-"+n.id+".log"), []byte(n.stderr.String()), 0o644); err != nil {
				t.Log(err)
			}
		}
	}
}

// fdDiskShown returns how the node's disk is shown: its vigie_disk_full metric ("1",
// "0", or "absent") and its disk in GET /v1/cluster/status asked of base ("full",
// "not full", or "absent": the node never reported its disk).
func fdDiskShown(t *testing.T, n *clusterNode, base string) (metric, status string) {
	t.Helper()
	metric = "absent"
	_, b := do(t, "GET", n.base()+"/metrics", nil)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "vigie_disk_full "); ok {
			metric = strings.TrimSpace(v)
		}
	}
	var st struct {
		Nodes []struct {
			ID   string         `json:"id"`
			Disk map[string]any `json:"disk"`
		} `json:"nodes"`
	}
	mustDo(t, "GET", base+"/v1/cluster/status", nil, http.StatusOK, &st)
	status = "absent"
	for _, nd := range st.Nodes {
		if nd.ID == n.id && nd.Disk != nil {
			status = "not full"
			if nd.Disk["full"] == true {
				status = "full"
			}
		}
	}
	return metric, status
}

// fdTinySamples lists the video packets of path lasting at most 1 ms ("pts_time/duration_time").
func fdTinySamples(t *testing.T, path string) []string {
	t.Helper()
	out, err := run(context.Background(), t, "ffprobe", "-v", "error", "-select_streams", "v:0",
		"-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", path)
	if err != nil {
		return []string{fmt.Sprintf("ffprobe: %v: %s", err, out)}
	}
	var tiny []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		pts, dur, ok := strings.Cut(line, ",")
		if d, err := strconv.ParseFloat(dur, 64); ok && err == nil && d <= 0.001 {
			tiny = append(tiny, pts+"/"+dur)
		}
	}
	return tiny
}

// fdFrames returns the SEI frame numbers of an export file in sample order, and the
// numbers that repeat or go backwards (at most 20).
func fdFrames(t *testing.T, path string) (frames, dups []uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	frames, err = clustertest.ExportFrames(b)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	for i := 1; i < len(frames); i++ {
		if frames[i] <= frames[i-1] && len(dups) < 20 {
			dups = append(dups, frames[i])
		}
	}
	return frames, dups
}

// fdUnique returns the sorted distinct numbers.
func fdUnique(frames []uint64) []uint64 {
	out := append([]uint64(nil), frames...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	n := 0
	for i, f := range out {
		if i == 0 || f != out[n-1] {
			out[n] = f
			n++
		}
	}
	return out[:n]
}

// fdMountTmpfs mounts a tmpfs of sizeMiB on a new directory, unmounted at the end of the
// test (after the processes started later are killed: cleanups run last first).
func fdMountTmpfs(t *testing.T, sizeMiB int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a tmpfs needs root (CI=true): running as uid %d", os.Geteuid())
		}
		t.Skipf("skipped: mounting a tmpfs needs root, running as uid %d", os.Geteuid())
	}
	dir := filepath.Join(t.TempDir(), "small-disk")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", sizeMiB), "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount -t tmpfs %s: %v: %s", dir, err, out)
		}
		t.Skipf("skipped: mount -t tmpfs %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s; detaching it (umount -l)", dir, err, out)
			exec.Command("umount", "-l", dir).Run() //nolint:errcheck
		}
	})
	return dir
}

func fdStatfs(t *testing.T, dir string) (free, total int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize, int64(st.Blocks) * st.Bsize
}

// fdFill appends to path: n bytes, or until ENOSPC when n < 0. It returns what it wrote.
func fdFill(path string, n int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 1) // not zeros: nothing may store them sparsely
	}
	var wrote int64
	for n < 0 || wrote < n {
		chunk := buf
		if n >= 0 && n-wrote < int64(len(chunk)) {
			chunk = chunk[:n-wrote]
		}
		k, err := f.Write(chunk)
		wrote += int64(k)
		if err != nil {
			if n < 0 && errors.Is(err, syscall.ENOSPC) {
				return wrote, nil
			}
			return wrote, err
		}
	}
	return wrote, f.Sync()
}

// fdStartCluster is startClusterNodes with node i's data directory at dirs[i].
func fdStartCluster(t *testing.T, keyFile string, dirs []string, extra ...string) []*clusterNode {
	t.Helper()
	nodes := make([]*clusterNode, len(dirs))
	for i := range nodes {
		nodes[i] = &clusterNode{id: "e2e-n" + string(rune('1'+i)), gossip: freeUDPAndTCP(t)}
	}
	for i, nd := range nodes {
		var seeds []string
		for j, o := range nodes {
			if j != i {
				seeds = append(seeds, o.gossip)
			}
		}
		a := freeAddrs(t)
		args := append([]string{"node", "--data-dir", dirs[i], "--node-id", nd.id, "--gossip-addr", nd.gossip,
			"--secret-key-file", keyFile}, a.flags()...)
		if i > 0 {
			args = append(args, "--seeds", strings.Join(seeds, ","))
		}
		args = append(args, extra...)
		nd.proc = startProc(t, nd.id, dirs[i], a, args...)
		if i == 0 {
			nd.waitReady(30 * time.Second) // the others join it
		}
	}
	for _, nd := range nodes[1:] {
		nd.waitReady(30 * time.Second)
	}
	return nodes
}

// fdWaitVoters waits until the cluster status shows n active voters (the leader counts).
func fdWaitVoters(t *testing.T, base string, n int, timeout time.Duration) {
	t.Helper()
	var st clusterStatus
	fdEventually(t, timeout, fmt.Sprintf("a cluster of %d voters", n), func() bool {
		st = getClusterStatus(t, base)
		voters := 0
		for _, nd := range st.Nodes {
			if nd.State == "active" && (nd.Role == "leader" || nd.Role == "voter") {
				voters++
			}
		}
		return voters == n
	})
}

func fdEventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fdRecording returns the cameras the node records now, from its Prometheus metrics
// (vigie_camera_recording{camera="…"} 1), sorted.
func fdRecording(t *testing.T, n *clusterNode) []string {
	t.Helper()
	res, err := http.Get(n.base() + "/metrics")
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", n.id, err)
	}
	defer res.Body.Close()
	var out []string
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	const prefix = `vigie_camera_recording{camera="`
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, "} 1") {
			continue
		}
		if cam, _, ok := strings.Cut(line[len(prefix):], `"`); ok {
			out = append(out, cam)
		}
	}
	io.Copy(io.Discard, res.Body) //nolint:errcheck
	sort.Strings(out)
	return out
}

// fdWaitLog waits until a line of some node's log holds both substrings, and returns it.
func fdWaitLog(t *testing.T, nodes []*clusterNode, substr, and string, timeout time.Duration) string {
	t.Helper()
	var line string
	fdEventually(t, timeout, fmt.Sprintf("log line with %q and %q", substr, and), func() bool {
		for _, n := range nodes {
			for _, l := range n.logLines(substr) {
				if strings.Contains(l, and) {
					line = n.id + ": " + l
					return true
				}
			}
		}
		return false
	})
	return line
}
