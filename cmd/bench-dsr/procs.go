package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is a service the bench started as a process of its own; its output goes to a log
// file that a failure prints the end of.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	admin  string // admin listen address (/healthz, /metrics)
	addr   string // gRPC listen address
	exited chan struct{}
}

// freePort is a loopback address nothing listens on now: the kernel's pick, never one of
// make run's fixed ports.
func freePort() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

// startProc runs bin with env on top of the bench's environment, logging to logDir/name.log.
func startProc(name, bin, logDir string, env []string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.exited) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the process: SIGTERM, and SIGKILL when it has not exited 15 s later.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// tail is the end of the process's log, for an error message.
func (p *proc) tail() string {
	data, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// waitHealthy waits until the process answers /healthz with 200, failing when it exits first
// or timeout passes.
func (p *proc) waitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + p.admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before it was healthy; its log (%s) ends:\n%s", p.name, p.log, p.tail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %s; its log (%s) ends:\n%s", p.name, timeout, p.log, p.tail())
		}
	}
}

// alive fails when the process has exited.
func (p *proc) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited; its log (%s) ends:\n%s", p.name, p.log, p.tail())
	default:
		return nil
	}
}

// metrics returns the process's /metrics text.
func (p *proc) metrics() (string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return "", fmt.Errorf("%s metrics: %w", p.name, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return "", fmt.Errorf("%s metrics: %w", p.name, err)
	}
	return buf.String(), nil
}

// metricSum is the sum of every series of the metric name in a Prometheus text exposition,
// and whether there was any.
func metricSum(text, name string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) || len(line) == len(name) {
			continue
		}
		if c := line[len(name)]; c != '{' && c != ' ' {
			continue // another metric whose name starts with this one
		}
		f := strings.Fields(line)
		var v float64
		if _, err := fmt.Sscanf(f[len(f)-1], "%g", &v); err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// memory is what /proc/<pid>/status says of a process's resident memory, in KiB.
type memory struct{ hwm, rss int64 }

func readMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	return parseMemory(string(data))
}

func parseMemory(status string) (memory, error) {
	var m memory
	for _, line := range strings.Split(status, "\n") {
		var kb int64
		switch {
		case strings.HasPrefix(line, "VmHWM:"):
			if _, err := fmt.Sscanf(strings.TrimPrefix(line, "VmHWM:"), "%d kB", &kb); err == nil {
				m.hwm = kb
			}
		case strings.HasPrefix(line, "VmRSS:"):
			if _, err := fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%d kB", &kb); err == nil {
				m.rss = kb
			}
		}
	}
	if m.hwm == 0 || m.rss == 0 {
		return m, fmt.Errorf("no VmHWM and VmRSS in the status")
	}
	return m, nil
}

// resetPeak sets the process's VmHWM back to its current resident size (Linux: 5 to
// /proc/<pid>/clear_refs), so that a phase's peak is its own.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

func mib(kb int64) float64 { return float64(kb) / 1024 }
