package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// BenchmarkRedisBeat measures what a node's beat costs the Redis server
// in its own CPU time (INFO cpu), per beat and per record the beat holds
// (its heartbeat, a renewal and a stream record per claim, a relay record
// per relay due): with the records a second that meshcast sim counts for a
// cluster, the share of a Redis core that cluster needs (BENCHMARKS.md).
//
//	go test -run '^$' -bench BenchmarkRedisBeat -benchtime 20000x ./internal/cluster
func BenchmarkRedisBeat(b *testing.B) {
	for _, shape := range []struct{ claims, relays int }{
		{0, 0}, {0, 10}, {0, 100}, {10, 0}, {100, 0}, {20, 100},
	} {
		b.Run(fmt.Sprintf("claims=%d/relays=%d", shape.claims, shape.relays), func(b *testing.B) {
			srv := testutil.StartRedis(b, 0)
			reg, err := NewRedis(RedisConfig{URL: srv.URL(), NodeTimeout: DefaultNodeTimeout})
			if err != nil {
				b.Fatal(err)
			}
			defer reg.Close()
			if err := reg.Heartbeat(bg, testNode(nodeA)); err != nil {
				b.Fatal(err)
			}
			var claims []Claim
			for i := range shape.claims {
				c, err := reg.Claim(bg, streamname.Name(fmt.Sprintf("live/s%03d", i)), nodeA, "")
				if err != nil {
					b.Fatal(err)
				}
				claims = append(claims, c)
			}
			relays := map[streamname.Name]NodeID{}
			for i := range shape.relays {
				relays[streamname.Name(fmt.Sprintf("live/r%03d", i))] = nodeB
			}
			beat := beatOf(nodeA, claims, relays)
			if _, err := reg.Beat(bg, beat); err != nil { // loads the script
				b.Fatal(err)
			}
			info := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer info.Close()
			cpu0 := redisCPU(b, info)
			b.ResetTimer()
			for b.Loop() {
				if lost, err := reg.Beat(bg, beat); err != nil || len(lost) != 0 {
					b.Fatalf("Beat: lost %v, %v", lost, err)
				}
			}
			b.StopTimer()
			cpu := redisCPU(b, info) - cpu0
			records := 1 + 2*shape.claims + shape.relays
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "redis-µs/beat")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*records), "redis-µs/record")
		})
	}
}

// redisCPU is the CPU time the Redis server has used, user and system.
func redisCPU(b *testing.B, c *redis.Client) time.Duration {
	b.Helper()
	s, err := c.Info(bg, "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for line := range strings.SplitSeq(s, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "used_cpu_user" && k != "used_cpu_sys") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("INFO cpu %s: %v", line, err)
		}
		total += time.Duration(f * float64(time.Second))
	}
	return total
}

// BenchmarkRedisNodes measures what a router's read of the node list costs
// the Redis server per node record, for clusters of 100 and 1000 nodes
// (records of the size a busy node sends, with its streams' viewers).
//
//	go test -run '^$' -bench BenchmarkRedisNodes -benchtime 2000x ./internal/cluster
func BenchmarkRedisNodes(b *testing.B) {
	for _, nodes := range []int{100, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			srv := testutil.StartRedis(b, 0)
			reg, err := NewRedis(RedisConfig{URL: srv.URL(), NodeTimeout: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			defer reg.Close()
			for i := range nodes {
				n := testNode(NodeID(fmt.Sprintf("node-%04d", i)))
				n.StreamViewers = map[streamname.Name]map[string]int{}
				for s := range 10 {
					n.StreamViewers[streamname.Name(fmt.Sprintf("live/s%d", s))] = map[string]int{"flv": 100, "hls": 50}
				}
				if err := reg.Heartbeat(bg, n); err != nil {
					b.Fatal(err)
				}
			}
			if got, err := reg.Nodes(bg); err != nil || len(got) != nodes {
				b.Fatalf("Nodes: %d, %v", len(got), err)
			}
			info := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer info.Close()
			cpu0 := redisCPU(b, info)
			b.ResetTimer()
			for b.Loop() {
				if _, err := reg.Nodes(bg); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := redisCPU(b, info) - cpu0
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "redis-µs/read")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*nodes), "redis-µs/record")
		})
	}
}
