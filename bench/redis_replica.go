package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A replicated Redis (Redis.Replica: the system redis-replica): the primary
// as for redis-always, and a second redis-server on loopback started with
// --replicaof the primary, appendfsync always on both. Each publisher's
// pipeline ends with WAIT 1 0, and its messages count as acknowledged
// when WAIT reports the replica: the primary fsynced its AOF before
// replying to the XADDs, and the replica acknowledged the replication
// stream up to them. The replica acknowledges what it has applied in
// memory, not what it has fsynced (Redis 7.0 has no WAITAOF), so the ack
// means "primary's disk + replica's memory". Subscribers read the primary.

const redisReplicaDurability = "primary's disk + replica's memory"

func (r *Redis) replicaInfo(info *SystemInfo) {
	info.Product = "Redis Streams, primary + 1 replica"
	info.Settings["server"] = "2 x redis-server on loopback: the primary (" + info.Settings["server"] + " --repl-diskless-sync-delay 0) and a replica (the same flags and --replicaof 127.0.0.1 PRIMARY_PORT, its own TMPDIR)"
	info.Settings["sync"] = "appendfsync always on both; each pipeline ends with WAIT 1 0: an ack means " + redisReplicaDurability + " (the replica acknowledges the replication offset it applied, before its own AOF fsync; Redis 7.0 has no WAITAOF)"
	info.Settings["publish"] += ", then WAIT 1 0 in the same pipeline; its messages count as acknowledged when WAIT returns 1"
}

// startReplica starts the replica of the primary on primaryPort, in
// dir/replica, and waits until the primary reports it online.
func (r *Redis) startReplica(ctx context.Context, bin, dir string, primaryPort int) error {
	rdir := filepath.Join(dir, "replica")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	r.raddr = fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc(r.Name()+"-replica", bin, redisArgs(port, rdir, r.Fsync, fmt.Sprintf("127.0.0.1 %d", primaryPort)), rdir)
	if err != nil {
		return err
	}
	r.rp = p
	if err := waitDial(ctx, r.raddr, p); err != nil {
		return err
	}
	c := r.client()
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	last := ""
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err == nil {
			if replicaOnline(info) {
				return nil
			}
			last = strings.Join(strings.Fields(info), " ")
		} else {
			last = err.Error()
		}
		if p.exited() {
			return fmt.Errorf("redis replica exited: %v; output: %s", p.waitErr, p.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis replica not online after 15s: %s", last)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// replicaOnline reports whether the primary's INFO replication text lists
// a replica in state online ("slave0:ip=...,port=...,state=online,...").
func replicaOnline(info string) bool {
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=online") {
			return true
		}
	}
	return false
}
