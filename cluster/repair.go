package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// Repair: when a node has been dead longer than RepairGrace, or is decommissioned, the
// leader marks it (a set-repair command, so every node agrees on which shards are lost).
// Every node then derives the same plan from the store and its gossip view: for each
// stripe with a shard on a marked node, the shard is rebuilt on a live node that holds no
// shard of the stripe (another zone when possible), and that node runs the task
// (RepairTasks). It records the result with UpdateShard, a compare-and-set, so two nodes
// that briefly disagree never both win.

// RepairTask asks the node To to rebuild one shard.
type RepairTask struct {
	// Stripe is the stripe as the catalog holds it (shard nodes included).
	Stripe model.Stripe `json:"stripe"`
	// Index is the shard to rebuild; Segment the data segment it is ("" for parity).
	Index   int             `json:"index"`
	Segment model.SegmentID `json:"segment,omitempty"`
	// From is the node that lost it (dead past RepairGrace, or decommissioned).
	From model.NodeID `json:"from"`
	// FromAlive: From still answers (a decommissioned node that is up): copying the shard
	// from it is cheaper than rebuilding it from Sources.
	FromAlive bool `json:"from_alive,omitempty"`
	// To is the node that rebuilds the shard and keeps it.
	To model.NodeID `json:"to"`
	// Sources are k indexes of surviving shards on live nodes to rebuild from.
	Sources []int `json:"sources"`
	// Bytes is the size of the shard to write.
	Bytes int64 `json:"bytes"`
	// Survivors is how many shards of the stripe are not on a marked node; tasks come
	// fewest spare shards (Survivors − K) first.
	Survivors int `json:"survivors"`
}

// RepairNode is a node whose shards are being rebuilt elsewhere.
type RepairNode struct {
	ID     model.NodeID `json:"id"`
	Reason string       `json:"reason"` // "dead" or "decommissioned"
	Since  time.Time    `json:"since"`
	// Shards it held when it was marked, shards still recorded on it, shards moved off.
	Shards int `json:"shards"`
	Left   int `json:"left"`
	Done   int `json:"done"`
}

// RepairReport is the state of repair, for `vigie ctl cluster status` and metrics.
type RepairReport struct {
	Nodes []RepairNode `json:"nodes"`
	// AtRisk counts the stripes that lost shards on marked nodes, by surviving shards.
	AtRisk map[int]int `json:"at_risk"`
	// Unrecoverable: stripes with fewer than K surviving shards (their footage is lost
	// unless a marked node comes back).
	Unrecoverable int `json:"unrecoverable"`
	// Stuck: stripes that cannot be repaired now (not K live sources, or no node can take
	// the shard); they are retried as nodes come back or join.
	Stuck int `json:"stuck"`
	// Pending shards to rebuild and their bytes; Done shards rebuilt since the marks.
	Pending      int   `json:"pending"`
	BytesPending int64 `json:"bytes_pending"`
	Done         int   `json:"done"`
}

type repairInput struct {
	Stripes []model.Stripe // every stripe with a shard on a marked node, sorted by id
	Marked  map[model.NodeID]repairMark
	Nodes   map[model.NodeID]*nodeInfo
}

type repairPlan struct {
	Tasks         []RepairTask // margin (survivors − k), survivors, stripe id, index
	AtRisk        map[int]int
	Unrecoverable int
	Stuck         int
	Pending       int
	BytesPending  int64
}

// planRepair is the pure repair planner.
func planRepair(in repairInput) repairPlan {
	p := repairPlan{AtRisk: map[int]int{}}
	alive := func(id model.NodeID) bool {
		n := in.Nodes[id]
		return n != nil && n.Alive
	}
	var cands []*nodeInfo
	for _, n := range in.Nodes {
		if _, marked := in.Marked[n.ID]; !marked && n.takesData() {
			cands = append(cands, n)
		}
	}
	for _, st := range in.Stripes {
		var lost []int
		for i, sh := range st.Shards {
			if _, ok := in.Marked[sh.Node]; ok {
				lost = append(lost, i)
			}
		}
		if len(lost) == 0 {
			continue
		}
		survivors := len(st.Shards) - len(lost)
		p.AtRisk[survivors]++
		p.Pending += len(lost)
		for _, i := range lost {
			p.BytesPending += st.Shards[i].Bytes
		}
		var sources []int
		for i, sh := range st.Shards {
			if _, marked := in.Marked[sh.Node]; !marked && alive(sh.Node) && len(sources) < st.K {
				sources = append(sources, i)
			}
		}
		copyable := true
		for _, i := range lost {
			copyable = copyable && alive(st.Shards[i].Node)
		}
		if survivors < st.K {
			p.Unrecoverable++
		}
		if len(sources) < st.K && !copyable {
			p.Stuck++
			continue
		}
		inStripe := map[model.NodeID]bool{}
		used := map[string]bool{}
		for i, sh := range st.Shards {
			inStripe[sh.Node] = true
			if _, marked := in.Marked[sh.Node]; !marked {
				if n := in.Nodes[sh.Node]; n != nil && n.Zone != "" {
					used[n.Zone] = true
				}
			}
			_ = i
		}
		var tasks []RepairTask
		planned := map[model.NodeID]int{}
		for _, i := range lost {
			var free []*nodeInfo
			for _, n := range cands {
				if !inStripe[n.ID] {
					free = append(free, n)
				}
			}
			to := pickSpread(fmt.Sprintf("repair\x00%s\x00%d", st.ID, i), free, 1, used)
			if len(to) == 0 {
				// Fewer live nodes than k+m: co-locate the shard on the live node that
				// holds the fewest shards of the stripe, never more than m (losing that
				// node must stay survivable).
				to = colocate(fmt.Sprintf("repair\x00%s\x00%d", st.ID, i), st, cands, in.Marked, planned)
			}
			if len(to) == 0 {
				tasks = nil
				break
			}
			planned[to[0]]++
			inStripe[to[0]] = true
			if z := in.Nodes[to[0]].Zone; z != "" {
				used[z] = true
			}
			sh := st.Shards[i]
			tasks = append(tasks, RepairTask{
				Stripe: st, Index: i, Segment: sh.Segment, From: sh.Node, FromAlive: alive(sh.Node),
				To: to[0], Sources: sources, Bytes: sh.Bytes, Survivors: survivors,
			})
		}
		if len(tasks) == 0 {
			p.Stuck++
			continue
		}
		p.Tasks = append(p.Tasks, tasks...)
	}
	sort.SliceStable(p.Tasks, func(i, j int) bool {
		a, b := p.Tasks[i], p.Tasks[j]
		ma, mb := a.Survivors-a.Stripe.K, b.Survivors-b.Stripe.K
		switch {
		case ma != mb:
			return ma < mb
		case a.Survivors != b.Survivors:
			return a.Survivors < b.Survivors
		case a.Stripe.ID != b.Stripe.ID:
			return a.Stripe.ID < b.Stripe.ID
		}
		return a.Index < b.Index
	})
	return p
}

// repairMarks returns every repair mark.
func (f *fsm) repairMarks() (map[model.NodeID]repairMark, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := map[model.NodeID]repairMark{}
	err := scan(f.db, prefixRepair, prefixEnd(prefixRepair), func(_, v []byte) (bool, error) {
		r, err := decRepairMark(v)
		if err != nil {
			return false, err
		}
		out[r.Node] = r
		return true, nil
	})
	return out, err
}

// stripesOnMarked reads the stripes with a shard on a marked node, and how many shards
// each marked node still holds.
func (f *fsm) stripesOnMarked(marks map[model.NodeID]repairMark) ([]model.Stripe, map[model.NodeID]int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ids := map[model.StripeID]bool{}
	left := map[model.NodeID]int{}
	for node := range marks {
		p := nodeStripePrefix(node)
		err := scan(f.db, p, prefixEnd(p), func(k, _ []byte) (bool, error) {
			ids[model.StripeID(k[len(p):])] = true
			left[node]++
			return true, nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	out := make([]model.Stripe, 0, len(ids))
	for id := range ids {
		st, err := getStripe(f.db, id)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, left, nil
}

func (c *Cluster) repairPlan() (repairPlan, map[model.NodeID]repairMark, map[model.NodeID]int, error) {
	marks, err := c.fsm.repairMarks()
	if err != nil {
		return repairPlan{}, nil, nil, err
	}
	if len(marks) == 0 {
		return repairPlan{AtRisk: map[int]int{}}, marks, nil, nil
	}
	stripes, left, err := c.fsm.stripesOnMarked(marks)
	if err != nil {
		return repairPlan{}, nil, nil, err
	}
	infos, err := c.nodeInfos()
	if err != nil {
		return repairPlan{}, nil, nil, err
	}
	return planRepair(repairInput{Stripes: stripes, Marked: marks, Nodes: infos}), marks, left, nil
}

// RepairTasks returns the shards node should rebuild now, most urgent first (fewest
// spare shards), at most limit (<= 0: all). The node runs each — copy the shard from
// From when FromAlive, else read Sources and reconstruct — writes it locally, then calls
// UpdateShard(ctx, task.Stripe.ID, task.Index, task.From, shard); model.ErrStaleEpoch
// there means another node won: it drops its copy. Call it every RepairInterval (e.g.
// 10–30 s) and when Changes fires: the list shrinks as shards move. The plan is the
// same on every node that sees the same state.
func (c *Cluster) RepairTasks(node model.NodeID, limit int) ([]RepairTask, error) {
	p, _, _, err := c.repairPlan()
	if err != nil {
		return nil, fmt.Errorf("repair tasks: %w", err)
	}
	var out []RepairTask
	for _, t := range p.Tasks {
		if t.To == node {
			out = append(out, t)
			if limit > 0 && len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

// RepairStatus reports the marked nodes, the stripes at risk by surviving shards, and
// the shards pending and done.
func (c *Cluster) RepairStatus() (RepairReport, error) {
	p, marks, left, err := c.repairPlan()
	if err != nil {
		return RepairReport{}, fmt.Errorf("repair status: %w", err)
	}
	r := RepairReport{AtRisk: p.AtRisk, Unrecoverable: p.Unrecoverable, Stuck: p.Stuck, Pending: p.Pending, BytesPending: p.BytesPending}
	for id, m := range marks {
		n := RepairNode{ID: id, Reason: m.Reason, Since: m.Since, Shards: m.Shards, Left: left[id]}
		n.Done = max(0, n.Shards-n.Left)
		r.Done += n.Done
		r.Nodes = append(r.Nodes, n)
	}
	sort.Slice(r.Nodes, func(i, j int) bool { return r.Nodes[i].ID < r.Nodes[j].ID })
	return r, nil
}

// ---- leader: marks ----

// stripeNodes returns every node that holds a shard (a skip scan of pn/).
func (f *fsm) stripeNodes() ([]model.NodeID, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: prefixNodeStripe, UpperBound: prefixEnd(prefixNodeStripe)})
	if err != nil {
		return nil, err
	}
	var out []model.NodeID
	for ok := it.First(); ok; {
		k := it.Key()[len(prefixNodeStripe):]
		i := 0
		for i < len(k) && k[i] != 0 {
			i++
		}
		node := model.NodeID(k[:i])
		out = append(out, node)
		ok = it.SeekGE(prefixEnd(nodeStripePrefix(node)))
	}
	return out, errors.Join(it.Error(), it.Close())
}

// reconcileRepair marks the nodes dead for RepairGrace and the decommissioned ones, and
// clears the mark of a node that is back (alive and not decommissioned). It returns when
// a dead node's grace ends (zero when none is pending).
func (c *Cluster) reconcileRepair(now time.Time, mem *leaderMemory) time.Time {
	marks, err := c.fsm.repairMarks()
	if err != nil {
		c.logger.Warn("leader: read repair marks", slog.Any("error", err))
		return time.Time{}
	}
	infos, err := c.nodeInfos()
	if err != nil {
		c.logger.Warn("leader: read nodes for repair", slog.Any("error", err))
		return time.Time{}
	}
	holders, err := c.fsm.stripeNodes()
	if err != nil {
		c.logger.Warn("leader: read shard holders", slog.Any("error", err))
		return time.Time{}
	}
	ids := map[model.NodeID]bool{}
	for id := range infos {
		ids[id] = true
	}
	for id := range marks {
		ids[id] = true
	}
	for _, id := range holders {
		ids[id] = true
	}
	var wake time.Time
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ApplyTimeout)
	defer cancel()
	for id := range ids {
		in := infos[id]
		if in == nil {
			in = &nodeInfo{ID: id}
		}
		want := ""
		switch {
		case in.Decommissioned:
			want = repairDecommissioned
		case !in.Alive && id != c.cfg.NodeID:
			since := time.Time{}
			if c.members != nil {
				if m, ok := c.members.get(id); ok {
					since = m.DeadSince
				}
			}
			if since.IsZero() {
				if mem.missingSince[id].IsZero() {
					mem.missingSince[id] = now
				}
				since = mem.missingSince[id]
			}
			if due := since.Add(c.cfg.RepairGrace); now.Before(due) {
				if wake.IsZero() || due.Before(wake) {
					wake = due
				}
			} else {
				want = repairDead
			}
		}
		_, marked := marks[id]
		if (want != "") == marked {
			continue
		}
		if _, err := c.applyLocal(ctx, command{Op: opSetRepair, Node: id, Reason: want, At: now.UTC().Round(0)}); err != nil {
			c.logger.Warn("leader: repair mark", slog.String("peer", string(id)), slog.String("reason", want), slog.Any("error", err))
			continue
		}
		if want == "" {
			c.logger.Info("leader: node is back; its shards are no longer rebuilt", slog.String("peer", string(id)))
		} else {
			c.logger.Warn("leader: rebuilding the shards of a node elsewhere", slog.String("peer", string(id)), slog.String("reason", want))
		}
	}
	return wake
}

// colocate picks, for a stripe that cannot have its k+m shards on distinct live nodes,
// the candidate holding the fewest of its shards (surviving and planned), below m.
func colocate(key string, st model.Stripe, cands []*nodeInfo, marked map[model.NodeID]repairMark, planned map[model.NodeID]int) []model.NodeID {
	held := map[model.NodeID]int{}
	for _, sh := range st.Shards {
		if _, m := marked[sh.Node]; !m {
			held[sh.Node]++
		}
	}
	var best []*nodeInfo
	bestN := -1
	for _, n := range cands {
		c := held[n.ID] + planned[n.ID]
		if c >= st.M {
			continue
		}
		switch {
		case bestN < 0 || c < bestN:
			best, bestN = []*nodeInfo{n}, c
		case c == bestN:
			best = append(best, n)
		}
	}
	return pickSpread(key, best, 1, map[string]bool{})
}
