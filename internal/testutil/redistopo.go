package testutil

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a Redis Cluster of masters without replicas or
// persistence, each a redis-server child process on a loopback port.
type RedisCluster struct {
	Masters []*Redis
}

// URL is the cluster's redis:// URL: every master, comma-separated, which
// meshcast reads as a cluster.
func (c *RedisCluster) URL() string {
	addrs := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		addrs[i] = m.Addr()
	}
	return "redis://" + strings.Join(addrs, ",")
}

// StartRedisCluster starts n (at least 3) cluster-enabled redis-servers,
// joins them with `redis-cli --cluster create` (the slots split evenly, no
// replicas) and waits until every node reports the cluster up. They stop
// when the test ends. Without redis-server or redis-cli the test is
// skipped, or fails in CI.
func StartRedisCluster(t testing.TB, n int) *RedisCluster {
	t.Helper()
	Need(t, "redis-cli")
	c := &RedisCluster{}
	for range n {
		// Each node's cluster bus gets a free port of its own rather than
		// the default port+10000, which another test may hold.
		bus := FreePort(t)
		c.Masters = append(c.Masters, StartRedis(t, 0, "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", "2000"))
	}
	args := []string{"--cluster", "create"}
	for _, m := range c.Masters {
		args = append(args, m.Addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	WaitFor(t, 20*time.Second, "the Redis Cluster to be up", func() bool {
		for _, m := range c.Masters {
			if !answersAll(m.Port, "CLUSTER INFO\r\n", "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	return c
}

// RedisSentinel is a master, a replica and sentinels watching them, each a
// redis-server child process on a loopback port.
type RedisSentinel struct {
	Master, Replica *Redis
	Sentinels       []*Server
	Name            string // the master's name in the sentinels
}

// URL is the redis:// URL through the sentinels: every sentinel,
// comma-separated, and the master's name.
func (s *RedisSentinel) URL() string {
	addrs := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		addrs[i] = sn.Addr()
	}
	return "redis://" + strings.Join(addrs, ",") + "/0?master=" + s.Name
}

// StartRedisSentinel starts a master, a replica of it and three sentinels
// (quorum 2, a master down after 1 s), waits until every sentinel knows the
// replica, and stops them all when the test ends. Without redis-server the
// test is skipped, or fails in CI.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{Name: "meshcast"}
	s.Master = StartRedis(t, 0)
	s.Replica = StartRedis(t, 0, "--replicaof", "127.0.0.1", strconv.Itoa(s.Master.Port))
	for range 3 {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		sn := startServer(t, 0, func(p int) bool { return answers(p, "PING\r\n", "+PONG") }, "redis-server",
			func(p int) []string {
				// A sentinel rewrites its configuration file: one each.
				body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
					"sentinel monitor %s 127.0.0.1 %d 2\n"+
					"sentinel down-after-milliseconds %s 1000\n"+
					"sentinel failover-timeout %s 5000\n",
					p, dir, s.Name, s.Master.Port, s.Name, s.Name)
				if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				return []string{conf, "--sentinel"}
			})
		s.Sentinels = append(s.Sentinels, sn)
	}
	WaitFor(t, 20*time.Second, "the sentinels to know the master and its replica", func() bool {
		for _, sn := range s.Sentinels {
			if !answersAll(sn.Port, "SENTINEL REPLICAS "+s.Name+"\r\n", strconv.Itoa(s.Replica.Port)) {
				return false
			}
		}
		return true
	})
	return s
}

// answersAll tells whether a server on port answers request (an inline
// command) with a reply that contains want within a second.
func answersAll(port int, request, want string) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		return false
	}
	var got []byte
	buf := make([]byte, 4096)
	for len(got) < 1<<20 {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if strings.Contains(string(got), want) {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}
