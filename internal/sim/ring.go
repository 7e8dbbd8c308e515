package sim

import (
	"math"
	"slices"
	"strconv"

	"github.com/meshcast/meshcast/internal/cluster"
)

// Balance is how evenly a placement spreads keys over nodes: the fewest,
// the most and the standard deviation of a node's share, each as a
// fraction of the mean share.
type Balance struct {
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Stddev float64 `json:"stddev"`
}

// Placement is one placement's balance and the keys that move when a node
// joins or leaves.
type Placement struct {
	Name    string  `json:"name"`
	Balance Balance `json:"balance"`
	// Join and Leave are the keys that change node when one node joins,
	// and when one leaves; Ideal is keys/nodes, the least either can be.
	Join  int     `json:"moved_on_join"`
	Leave int     `json:"moved_on_leave"`
	Ideal float64 `json:"ideal_moves"`
}

// Ring compares how streams spread over nodes by meshcast's hash balancer
// (rendezvous hashing, cluster.RendezvousHash, which needs no virtual
// nodes) with a consistent-hash ring of one point per node and one of
// VirtualNodes points per node.
type Ring struct {
	Nodes        int         `json:"nodes"`
	Streams      int         `json:"streams"`
	VirtualNodes int         `json:"virtual_nodes"`
	Placements   []Placement `json:"placements"`
}

// placer places keys on nodes.
type placer func(nodes []cluster.NodeID, keys []string) []int

// AnalyzeRing places keys on nodes with each method, then again with one
// node more and with one node less.
func AnalyzeRing(nodes []cluster.NodeID, keys []string, vnodes int) Ring {
	r := Ring{Nodes: len(nodes), Streams: len(keys), VirtualNodes: vnodes}
	methods := []struct {
		name string
		p    placer
	}{
		{"rendezvous (meshcast --balance hash)", rendezvousPlace},
		{"ring, 1 point per node", ringPlace(1)},
		{"ring, " + strconv.Itoa(vnodes) + " points per node", ringPlace(vnodes)},
	}
	joined := append(slices.Clone(nodes), "joining-node")
	left := slices.Delete(slices.Clone(nodes), len(nodes)/2, len(nodes)/2+1)
	for _, m := range methods {
		base := m.p(nodes, keys)
		p := Placement{Name: m.name, Balance: balanceOf(base, len(nodes)), Ideal: float64(len(keys)) / float64(len(nodes))}
		for i, n := range m.p(joined, keys) {
			if joined[n] != nodes[base[i]] {
				p.Join++
			}
		}
		for i, n := range m.p(left, keys) {
			if left[n] != nodes[base[i]] {
				p.Leave++
			}
		}
		r.Placements = append(r.Placements, p)
	}
	return r
}

// balanceOf measures the shares of placement over n nodes.
func balanceOf(placement []int, n int) Balance {
	count := make([]float64, n)
	for _, i := range placement {
		count[i]++
	}
	mean := float64(len(placement)) / float64(n)
	var b Balance
	b.Min, b.Max = math.Inf(1), 0
	var sq float64
	for _, c := range count {
		b.Min, b.Max = min(b.Min, c/mean), max(b.Max, c/mean)
		sq += (c - mean) * (c - mean)
	}
	b.Stddev = math.Sqrt(sq/float64(n)) / mean
	return b
}

// rendezvousPlace puts each key on the node cluster.RendezvousHash ranks
// highest, as the hash selector does.
func rendezvousPlace(nodes []cluster.NodeID, keys []string) []int {
	out := make([]int, len(keys))
	for k, key := range keys {
		best, bestScore := 0, uint64(0)
		for i, n := range nodes {
			if s := cluster.RendezvousHash(n, key); i == 0 || s > bestScore {
				best, bestScore = i, s
			}
		}
		out[k] = best
	}
	return out
}

// ringPlace returns a consistent-hash ring of points points per node: a
// key goes to the node of the first point at or after its hash.
func ringPlace(points int) placer {
	return func(nodes []cluster.NodeID, keys []string) []int {
		type point struct {
			h    uint64
			node int
		}
		ring := make([]point, 0, len(nodes)*points)
		for i, n := range nodes {
			for p := range points {
				ring = append(ring, point{fnv64(string(n) + "#" + strconv.Itoa(p)), i})
			}
		}
		slices.SortFunc(ring, func(a, b point) int {
			if a.h != b.h {
				if a.h < b.h {
					return -1
				}
				return 1
			}
			return a.node - b.node
		})
		out := make([]int, len(keys))
		for k, key := range keys {
			h := fnv64(key)
			i, _ := slices.BinarySearchFunc(ring, h, func(p point, h uint64) int {
				if p.h < h {
					return -1
				}
				if p.h > h {
					return 1
				}
				return 0
			})
			if i == len(ring) {
				i = 0
			}
			out[k] = ring[i].node
		}
		return out
	}
}

// fnv64 is FNV-1a, 64 bits, through splitmix64's finalizer: FNV alone
// leaves the points of "node#1", "node#2", ... close together on a ring.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	return h ^ h>>31
}
