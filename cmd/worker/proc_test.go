package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	cmd     *exec.Cmd
	logs    *testenv.LogBuffer
	started chan struct{} // closed when it logs that it serves
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, once done
}

// wait returns the exit status, or fails the test after timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("worker did not exit within %v\n%s", timeout, p.logs.String())
		return nil
	}
}

// startWorker starts bin/worker with env and waits until it serves.
func startWorker(t *testing.T, env []string) *proc {
	t.Helper()
	return startBinary(t, filepath.Join(binaries(t), "worker"), env)
}

// startBinary starts the worker binary bin with env and waits until it serves.
func startBinary(t *testing.T, bin string, env []string) *proc {
	t.Helper()
	p := launch(t, bin, env)
	select {
	case <-p.started:
	case <-p.done:
		t.Fatalf("worker exited: %v\n%s", p.err, p.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not start")
	}
	return p
}

// launch starts the worker binary bin with env and returns at once: p.started is closed when it
// serves, p.done when it exits. It is stopped with SIGINT at the end of the test.
func launch(t *testing.T, bin string, env []string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin), logs: &testenv.LogBuffer{}, started: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Env = env
	stderr, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			_, _ = p.logs.Write([]byte(sc.Text() + "\n"))
			if !once && strings.Contains(sc.Text(), "herald worker started") {
				once = true
				close(p.started)
			}
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// Stop it the way an operator would, so it leaves no server registration behind.
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(45 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}
