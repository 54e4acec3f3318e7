package bench

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// Redis is the adapter for Redis Streams (redis-server started by the bench).
//
// Settings: redis-server with appendonly yes and appendfsync always (fsync
// of the AOF before replying: Tandem's durability) or everysec (fsync once
// a second in the background), RDB snapshots off (save ""), one stream key
// "bench". Publishers send XADD bench * d PAYLOAD through go-redis
// pipelines: the window is the pipeline, i.e. each publisher sends the
// messages queued so far (at most window) as one pipeline and a message
// counts as acknowledged when its reply arrives; one pipeline is in flight
// per publisher (go-redis pipelines are synchronous). Subscribers loop on
// XREAD BLOCK 100 COUNT 1000 STREAMS bench LASTID, one connection each;
// "from now" starts after the stream's last entry at subscribe time.
type Redis struct {
	// Fsync is the appendfsync setting: "always" or "everysec".
	Fsync string
	// Replica: a second redis-server replicating from the first (same
	// appendfsync), and WAIT 1 0 after each pipeline (redis_replica.go).
	Replica bool
	// Bin is the redis-server binary; empty: looked up.
	Bin string

	p    *proc
	addr string

	// The replica (Replica true).
	rp    *proc
	raddr string
}

const redisStream = "bench"

func (r *Redis) Name() string {
	if r.Replica {
		return "redis-replica"
	}
	return "redis-" + r.Fsync
}

func (r *Redis) bin() (string, error) {
	if r.Bin != "" {
		return r.Bin, nil
	}
	b, err := findBinary("redis-server")
	if err != nil {
		return "", fmt.Errorf("%w: %v (make bench-deps: apt-get install redis-server)", errPeerMissing, err)
	}
	r.Bin = b
	return b, nil
}

func (r *Redis) Info() SystemInfo {
	fsync := "appendfsync always: the AOF is fsynced before replies are sent"
	if r.Fsync != "always" {
		fsync = "appendfsync " + r.Fsync + ": replies before fsync; the AOF is fsynced once a second in the background"
	}
	info := SystemInfo{
		Name:    r.Name(),
		Product: "Redis Streams",
		Settings: map[string]string{
			"server":    "redis-server --bind 127.0.0.1 --port PORT --dir TMPDIR --appendonly yes --appendfsync " + r.Fsync + " --save ''",
			"sync":      fsync,
			"client":    "github.com/redis/go-redis/v9, one client (pool size 2) per publisher/subscriber",
			"publish":   "XADD bench * d PAYLOAD, pipelined: each pipeline carries the messages queued so far (at most window), one pipeline in flight per publisher",
			"subscribe": "XREAD BLOCK 100 COUNT 1000 STREAMS bench LASTID (LASTID 0 from the start, the last entry's ID from now)",
		},
	}
	if r.Replica {
		r.replicaInfo(&info)
	}
	if b, err := r.bin(); err != nil {
		info.Skipped = err.Error()
	} else {
		info.Binary = b
		info.Version = binaryVersion(b, "--version")
	}
	return info
}

func (r *Redis) Start(ctx context.Context, dir string) error {
	bin, err := r.bin()
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	r.addr = fmt.Sprintf("127.0.0.1:%d", port)
	args := redisArgs(port, dir, r.Fsync, "")
	if r.Replica {
		// The replica's first full sync starts at once (default: 5 s).
		args = append(args, "--repl-diskless-sync-delay", "0")
	}
	p, err := startProc(r.Name(), bin, args, dir)
	if err != nil {
		return err
	}
	r.p = p
	if err := waitDial(ctx, r.addr, p); err != nil {
		return err
	}
	c := r.client()
	defer c.Close()
	if err := redisReady(ctx, c); err != nil {
		return err
	}
	if r.Replica {
		return r.startReplica(ctx, bin, dir, port)
	}
	return nil
}

// redisArgs are a redis-server's flags: loopback port, data in dir, AOF
// with appendfsync fsync, no RDB snapshots; replicaOf "HOST PORT" makes it
// a replica of that server.
func redisArgs(port int, dir, fsync, replicaOf string) []string {
	args := []string{"--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--dir", dir,
		"--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--protected-mode", "no",
		"--daemonize", "no", "--logfile", "", "--loglevel", "warning"}
	if replicaOf != "" {
		args = append(args, "--replicaof", replicaOf)
	}
	return args
}

// redisReady waits until the server answers PING (not LOADING).
func redisReady(ctx context.Context, c *redis.Client) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Ping(ctx).Err()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // LOADING
	}
}

func (r *Redis) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.addr, PoolSize: 2, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
}

func (r *Redis) Stop() error {
	err := r.p.stop()
	r.p = nil
	if r.rp != nil {
		err = errors.Join(err, r.rp.stop())
		r.rp = nil
	}
	return err
}

type redisPub struct {
	c     *redis.Client
	win   *window
	queue chan []byte
	onAck func(uint64)
	max   int
	wait1 bool // WAIT 1 0 after each pipeline (redis-replica)
	ackCounter
	done   chan struct{}
	cancel context.CancelFunc
}

func (r *Redis) NewPublisher(ctx context.Context, name string, window int, onAck func(uint64)) (Publisher, error) {
	c := r.client()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	p := &redisPub{c: c, win: newWindow(window), queue: make(chan []byte, window), onAck: onAck, max: window, wait1: r.Replica, done: make(chan struct{}), cancel: cancel}
	p.init()
	go p.sender(rctx)
	return p, nil
}

// sender sends the queued messages as pipelines, one at a time.
func (p *redisPub) sender(ctx context.Context) {
	defer close(p.done)
	var i uint64
	batch := make([][]byte, 0, p.max)
	for {
		batch = batch[:0]
		select {
		case m, ok := <-p.queue:
			if !ok {
				return
			}
			batch = append(batch, m)
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < p.max {
			select {
			case m, ok := <-p.queue:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		pipe := p.c.Pipeline()
		cmds := make([]*redis.StringCmd, len(batch))
		for k, m := range batch {
			cmds[k] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: redisStream, ID: "*", Values: []any{"d", m}})
		}
		var wait *redis.IntCmd
		if p.wait1 {
			// The replica acknowledged the replication stream up to here
			// (held in its memory; its AOF fsync may come later).
			wait = redis.NewIntCmd(ctx, "wait", 1, 0)
			_ = pipe.Process(ctx, wait)
		}
		_, _ = pipe.Exec(ctx)
		replicated := wait == nil || (wait.Err() == nil && wait.Val() >= 1)
		for _, cmd := range cmds {
			if cmd.Err() != nil || !replicated {
				p.errs.Add(1)
			} else {
				p.onAck(i)
			}
			i++
			p.win.release()
		}
		p.ackedThrough(i)
	}
}

func (p *redisPub) Publish(ctx context.Context, payload []byte) error {
	if err := p.win.acquire(ctx); err != nil {
		return err
	}
	p.sent.Add(1)
	p.queue <- append([]byte(nil), payload...)
	return nil
}

func (p *redisPub) Wait(ctx context.Context) error {
	return p.wait(ctx, "redis XADDs")
}

func (p *redisPub) Errors() uint64 { return p.errs.Load() }

func (p *redisPub) Close() error {
	p.cancel()
	close(p.queue)
	<-p.done
	return p.c.Close()
}

type redisSub struct {
	c      *redis.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *Redis) Subscribe(ctx context.Context, name string, fromStart bool, onMsg func([]byte)) (Subscriber, error) {
	c := r.client()
	last := "0-0"
	if !fromStart {
		msgs, err := c.XRevRangeN(ctx, redisStream, "+", "-", 1).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			c.Close()
			return nil, err
		}
		if len(msgs) > 0 {
			last = msgs[0].ID
		}
	}
	rctx, cancel := context.WithCancel(context.Background())
	s := &redisSub{c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for rctx.Err() == nil {
			res, err := c.XRead(rctx, &redis.XReadArgs{Streams: []string{redisStream, last}, Count: 1000, Block: 100 * time.Millisecond}).Result()
			if err != nil {
				if errors.Is(err, redis.Nil) {
					continue
				}
				if rctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				continue
			}
			for _, st := range res {
				for _, m := range st.Messages {
					last = m.ID
					if v, ok := m.Values["d"].(string); ok {
						onMsg(stringBytes(v))
					}
				}
			}
		}
	}()
	return s, nil
}

func (s *redisSub) Close() error {
	s.cancel()
	<-s.done
	return s.c.Close()
}

// stringBytes returns a read-only view of s's bytes (the scenario only
// reads the payload header).
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
