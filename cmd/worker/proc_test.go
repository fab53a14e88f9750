package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds bin/worker and bin/enqueue once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "herald-bin-")
		if buildErr != nil {
			return
		}
		for _, name := range []string{"worker", "enqueue"} {
			if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), "../"+name).CombinedOutput(); err != nil {
				buildErr = &buildError{name, string(out), err}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

type buildError struct {
	name, out string
	err       error
}

func (e *buildError) Error() string { return "build " + e.name + ": " + e.err.Error() + "\n" + e.out }

// proc is a running worker process.
type proc struct {
	cmd    *exec.Cmd
	logs   *testenv.LogBuffer
	exited chan error
}

// startWorker starts bin/worker with env and waits until it serves.
func startWorker(t *testing.T, env []string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(filepath.Join(binaries(t), "worker")), logs: &testenv.LogBuffer{}, exited: make(chan error, 1)}
	p.cmd.Env = env
	stderr, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			_, _ = p.logs.Write([]byte(sc.Text() + "\n"))
			if !once && strings.Contains(sc.Text(), "herald worker started") {
				once = true
				close(started)
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	select {
	case <-started:
	case err := <-p.exited:
		t.Fatalf("worker exited: %v\n%s", err, p.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not start")
	}
	return p
}
