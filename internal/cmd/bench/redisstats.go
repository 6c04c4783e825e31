package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// cmdCounts counts Redis commands by name ("hset", "memory|usage").
type cmdCounts map[string]int64

func (c cmdCounts) total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// sub returns c - o, keeping only non-zero entries.
func (c cmdCounts) sub(o cmdCounts) cmdCounts {
	out := cmdCounts{}
	for k, v := range c {
		if d := v - o[k]; d != 0 {
			out[k] = d
		}
	}
	for k, v := range o {
		if _, ok := c[k]; !ok && v != 0 {
			out[k] = -v
		}
	}
	return out
}

// commandStats reads INFO commandstats: calls per command since the server started, counting
// commands run inside scripts as well as those clients sent.
func commandStats(ctx context.Context, rdb *redis.Client) (cmdCounts, error) {
	s, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO commandstats: %w", err)
	}
	out := cmdCounts{}
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for f := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					out[strings.TrimPrefix(name, "cmdstat_")] = n
				}
			}
		}
	}
	return out, nil
}

// CmdShare is one command's count per job.
type CmdShare struct {
	Command string  `json:"command"`
	PerJob  float64 `json:"perJob"`
}

// perJob divides counts by jobs and sorts them, largest first.
func perJob(c cmdCounts, jobs int) []CmdShare {
	out := make([]CmdShare, 0, len(c))
	for k, v := range c {
		if v == 0 {
			continue
		}
		out = append(out, CmdShare{Command: k, PerJob: float64(v) / float64(jobs)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PerJob != out[j].PerJob {
			return out[i].PerJob > out[j].PerJob
		}
		return out[i].Command < out[j].Command
	})
	return out
}

// monitor counts the commands MONITOR shows for one database, split into those clients sent and
// those scripts ran ("lua"). Unlike INFO commandstats it is exact on a shared server, since it sees
// each command's database; it slows Redis down, so it is used only in an untimed pass.
type monitor struct {
	conn net.Conn
	db   string
	done chan struct{}

	mu     sync.Mutex
	client cmdCounts
	script cmdCounts
	err    error
}

func startMonitor(addr string, db int) (*monitor, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		conn.Close()
		return nil, err
	}
	rd := bufio.NewReaderSize(conn, 1<<20)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	first, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "+OK") {
		conn.Close()
		return nil, fmt.Errorf("MONITOR: %q %v", first, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	m := &monitor{conn: conn, db: strconv.Itoa(db), done: make(chan struct{}), client: cmdCounts{}, script: cmdCounts{}}
	go m.read(rd)
	return m, nil
}

func (m *monitor) read(rd *bufio.Reader) {
	defer close(m.done)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			return
		}
		db, src, cmd, ok := parseMonitorLine(line)
		if !ok || db != m.db {
			continue
		}
		m.mu.Lock()
		if src == "lua" {
			m.script[cmd]++
		} else {
			m.client[cmd]++
		}
		m.mu.Unlock()
	}
}

// stop ends the monitor once the commands sent before it have been read: it sends a marker command
// on another connection and waits until the monitor sees it.
func (m *monitor) stop(ctx context.Context, rdb *redis.Client) (client, script cmdCounts, err error) {
	marker := "activator-bench-monitor-end"
	_ = rdb.Echo(ctx, marker).Err()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		seen := m.client["echo"] > 0
		m.mu.Unlock()
		if seen {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.client, "echo")
	return m.client, m.script, nil
}

// containers are commands whose first argument names a subcommand, as INFO commandstats does.
var containers = map[string]bool{"memory": true, "client": true, "config": true, "script": true,
	"object": true, "command": true, "cluster": true, "xinfo": true, "function": true, "acl": true}

// parseMonitorLine reads `+1700000000.123456 [13 127.0.0.1:5555] "evalsha" "..."`.
func parseMonitorLine(line string) (db, src, cmd string, ok bool) {
	i := strings.IndexByte(line, '[')
	j := strings.IndexByte(line, ']')
	if i < 0 || j < i {
		return "", "", "", false
	}
	db, src, ok = strings.Cut(line[i+1:j], " ")
	if !ok {
		return "", "", "", false
	}
	args := quotedArgs(line[j+1:], 2)
	if len(args) == 0 {
		return "", "", "", false
	}
	cmd = strings.ToLower(args[0])
	if containers[cmd] && len(args) > 1 {
		cmd += "|" + strings.ToLower(args[1])
	}
	return db, src, cmd, true
}

// quotedArgs returns up to n of MONITOR's double-quoted arguments.
func quotedArgs(s string, n int) []string {
	var out []string
	for len(out) < n {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			break
		}
		s = s[i+1:]
		var b strings.Builder
		k := 0
		for ; k < len(s); k++ {
			if s[k] == '\\' && k+1 < len(s) {
				k++
				b.WriteByte(s[k])
				continue
			}
			if s[k] == '"' {
				break
			}
			b.WriteByte(s[k])
		}
		out = append(out, b.String())
		if k >= len(s) {
			break
		}
		s = s[k+1:]
	}
	return out
}

// redisCPU is the CPU time the Redis server has used (INFO cpu: used_cpu_sys + used_cpu_user).
func redisCPU(ctx context.Context, rdb *redis.Client) time.Duration {
	s, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var sec float64
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				sec += f
			}
		}
	}
	return time.Duration(sec * float64(time.Second))
}
